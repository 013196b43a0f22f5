"""Serializers: the API's shapes. Input serializers only parse; services decide."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alliance.models import (
    AuditEvent,
    Event,
    Institution,
    Membership,
    MembershipApplication,
    Notification,
    Role,
    Sector,
    SignedCheckpoint,
    Webhook,
    WebhookDelivery,
)


@extend_schema_field(
    {
        "anyOf": [{"type": "string", "format": "uri"}, {"type": "string", "maxLength": 0}],
        "description": "A web address, or empty when the institution gave none.",
    }
)
class WebsiteField(serializers.URLField):
    """A URL or nothing: the schema says so, instead of a URI that an empty string breaks."""


class InstitutionSerializer(serializers.ModelSerializer):
    website = WebsiteField(read_only=True, allow_blank=True)

    class Meta:
        model = Institution
        fields = [
            "slug",
            "name",
            "sector",
            "country",
            "website",
            "description",
            "status",
            "admitted_at",
        ]
        read_only_fields = fields


class InstitutionUpdateSerializer(serializers.Serializer):
    sector = serializers.ChoiceField(choices=Sector.choices, required=False)
    country = serializers.CharField(max_length=100, required=False)
    website = WebsiteField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=2000, help_text=_("Why; the institution or applicant is told.")
    )


class OptionalReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ApplicationCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    sector = serializers.ChoiceField(choices=Sector.choices)
    country = serializers.CharField(max_length=100)
    website = WebsiteField(required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    contact_name = serializers.CharField(max_length=150)
    contact_title = serializers.CharField(
        max_length=150, required=False, allow_blank=True, default=""
    )
    contact_email = serializers.EmailField()
    motivation = serializers.CharField()


class ApplicationSerializer(serializers.ModelSerializer):
    institution = InstitutionSerializer(read_only=True)
    reviewed_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text=_("The staff member who decided; null while the application is pending."),
    )

    class Meta:
        model = MembershipApplication
        fields = [
            "id",
            "institution",
            "contact_name",
            "contact_title",
            "contact_email",
            "motivation",
            "status",
            "decision_reason",
            "reviewed_by",
            "reviewed_at",
            "submitted_at",
        ]
        read_only_fields = fields


class ApplicationReceiptSerializer(serializers.ModelSerializer):
    """What an anonymous applicant gets back: no review details."""

    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = MembershipApplication
        fields = ["id", "institution", "status", "submitted_at"]
        read_only_fields = fields


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    first_name = serializers.CharField(source="user.first_name", read_only=True)
    last_name = serializers.CharField(source="user.last_name", read_only=True)
    is_active = serializers.BooleanField(source="user.is_active", read_only=True)
    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Membership
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "institution",
            "role",
            "is_active",
            "invited_at",
            "joined_at",
        ]
        read_only_fields = fields


class MemberInviteSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_username", read_only=True)
    # Null for the system, an anonymous applicant or staff (no institution), and for events
    # about no institution in particular.
    actor_institution = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    subject_institution = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor",
            "actor_institution",
            "subject_institution",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "payload",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class ChainVerificationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    count = serializers.IntegerField()
    first_broken_seq = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()


_MAX_BIGINT = 2**63 - 1


class SignedCheckpointSerializer(serializers.ModelSerializer):
    root = serializers.CharField(read_only=True, help_text=_("The Merkle root, hex."))
    note = serializers.CharField(
        read_only=True,
        help_text=_("The C2SP signed checkpoint, byte for byte: keep it, verify it offline."),
    )

    class Meta:
        model = SignedCheckpoint
        fields = ["size", "root", "note", "created_at"]


class AuditLogKeySerializer(serializers.Serializer):
    origin = serializers.CharField(help_text=_("The log's name, first line of each checkpoint."))
    verifier_key = serializers.CharField(
        help_text=_("The signed-note verifier key: name+key id+base64(0x01, Ed25519 public key).")
    )


class InclusionProofQuerySerializer(serializers.Serializer):
    size = serializers.IntegerField(
        min_value=1,
        max_value=_MAX_BIGINT,
        required=False,
        help_text=_("The signed checkpoint's size; the newest checkpoint when omitted."),
    )


class InclusionProofSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    leaf_index = serializers.IntegerField(help_text=_("seq - 1: leaves count from 0."))
    tree_size = serializers.IntegerField()
    entry = serializers.CharField(
        help_text=_("The event's canonical JSON; its UTF-8 bytes are the Merkle leaf.")
    )
    leaf_hash = serializers.CharField(help_text=_("SHA-256(0x00 ‖ entry), hex."))
    proof = serializers.ListField(child=serializers.CharField(), help_text=_("Hashes, hex."))
    checkpoint = SignedCheckpointSerializer()


class ConsistencyProofQuerySerializer(serializers.Serializer):
    first = serializers.IntegerField(min_value=1, max_value=_MAX_BIGINT)
    second = serializers.IntegerField(
        min_value=1,
        max_value=_MAX_BIGINT,
        required=False,
        help_text=_("A signed checkpoint's size; the newest checkpoint when omitted."),
    )


class ConsistencyProofSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    proof = serializers.ListField(child=serializers.CharField(), help_text=_("Hashes, hex."))


# --- Notifications and webhooks ------------------------------------------------------------


class NotificationSerializer(serializers.ModelSerializer):
    text = serializers.CharField(read_only=True)
    is_read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "event", "text", "params", "path", "created_at", "is_read"]
        read_only_fields = fields

    def get_is_read(self, note: Notification) -> bool:
        return note.read_at is not None


class NotificationPreferenceSerializer(serializers.Serializer):
    email_own_runs = serializers.BooleanField(
        required=False, help_text=_("Email when a run I launched ends.")
    )
    email_problem_runs = serializers.BooleanField(
        required=False, help_text=_("Email when a run of a problem my institution is in ends.")
    )
    email_reminders = serializers.BooleanField(
        required=False, help_text=_("A daily reminder of decisions that wait for me.")
    )


class WebhookSerializer(serializers.ModelSerializer):
    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices))

    class Meta:
        model = Webhook
        fields = ["id", "institution", "url", "events", "is_active", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookWithSecretSerializer(WebhookSerializer):
    """A webhook as registered (or its secret replaced): the signing secret, shown this once."""

    secret = serializers.CharField(read_only=True)

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookInputSerializer(serializers.Serializer):
    # The URL is checked by the service (http or https only, no credentials).
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices), min_length=1, max_length=10
    )
    is_active = serializers.BooleanField(required=False, default=True)


class WebhookChangeSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=500, required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices),
        min_length=1,
        max_length=10,
        required=False,
    )
    is_active = serializers.BooleanField(required=False)


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "event_id",
            "status",
            "attempts",
            "response_code",
            "error",
            "created_at",
            "attempted_at",
        ]
        read_only_fields = fields
