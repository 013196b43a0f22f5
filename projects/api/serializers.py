"""Serializers: the API's shapes. Input serializers only parse; services decide.

Every set of choices is its own named schema component (``ParticipationRole``,
``AgreementStatus``...) through ``NamedChoiceField``: several of the app's models have a
``status`` or a ``role``, and clients should get one enum per meaning, not one per field name.
"""

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.plumbing import build_choice_description_list
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alliance.models import Institution, Sector
from portal.common.api import UtcDateTimeField
from portal.common.inputs import INT_MAX
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    DownloadScope,
    Metric,
    ModelFamily,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    TaskType,
)
from projects.schema import COLUMN_TYPES
from projects.services.agreements import MAX_CONTRIBUTORS


class NamedChoiceField(serializers.ChoiceField):
    """A choice field documented as the schema component ``enum_name``.

    The schema is attached in ``__init__`` because DRF rebuilds declared fields from their
    arguments for every serializer instance.
    """

    def __init__(self, *, enum_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.enum_name = enum_name
        schema = {
            "type": "string",
            "enum": list(self.choices),
            "description": build_choice_description_list(self.choices.items()),
        }
        extend_schema_field(schema, component_name=enum_name)(self)


def task_type_field(**kwargs: Any) -> NamedChoiceField:
    return NamedChoiceField(enum_name="TaskType", choices=TaskType.choices, **kwargs)


def metric_field(**kwargs: Any) -> NamedChoiceField:
    return NamedChoiceField(enum_name="Metric", choices=Metric.choices, **kwargs)


def participation_role_field(**kwargs: Any) -> NamedChoiceField:
    return NamedChoiceField(
        enum_name="ParticipationRole", choices=Participation.Role.choices, **kwargs
    )


def model_family_field(**kwargs: Any) -> NamedChoiceField:
    return NamedChoiceField(enum_name="ModelFamily", choices=ModelFamily.choices, **kwargs)


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


# --- Shapes of JSON documents (feature schemas, dataset columns) ------------------------------


class FeatureSpecSerializer(serializers.Serializer):
    """One column of a problem's feature schema; every dataset must provide the required ones."""

    name = serializers.CharField(max_length=100)
    type = NamedChoiceField(enum_name="ColumnType", choices=[(t, t) for t in COLUMN_TYPES])
    unit = serializers.CharField(required=False, allow_blank=True, default="")
    min = serializers.FloatField(required=False, allow_null=True, default=None)
    max = serializers.FloatField(required=False, allow_null=True, default=None)
    categories = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    required = serializers.BooleanField(required=False, default=True)


class DataColumnSerializer(serializers.Serializer):
    """One column of a dataset description, as `manage.py describe_dataset` prints it."""

    name = serializers.CharField()
    type = NamedChoiceField(enum_name="ColumnType", choices=[(t, t) for t in COLUMN_TYPES])
    missing = serializers.IntegerField(min_value=0, max_value=INT_MAX)
    min = serializers.FloatField(allow_null=True, required=False)
    max = serializers.FloatField(allow_null=True, required=False)
    categories = serializers.ListField(
        child=serializers.CharField(), allow_null=True, required=False
    )
    distinct = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=INT_MAX
    )


@extend_schema_field(FeatureSpecSerializer(many=True))
class FeaturesField(serializers.JSONField):
    """The feature schema as sent: a JSON list, checked by the service with every message."""

    default_error_messages = {
        "not_a_list": gettext_lazy("The feature schema must be a JSON list of column objects.")
    }

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, list):
            self.fail("not_a_list")
        return value


@extend_schema_field(DataColumnSerializer(many=True))
class DataColumnsField(serializers.JSONField):
    pass


class DatasetDescriptionSerializer(serializers.Serializer):
    """The JSON object `manage.py describe_dataset` prints at the site: send it unchanged.

    It is checked as a whole against the ratified schema, and every problem is named at once.
    """

    # Documentation only: the view hands the body to the service as received.

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    site_key = serializers.CharField(
        max_length=200,
        help_text=gettext_lazy("A file name in the site's own data directory; never a path."),
    )
    row_count = serializers.IntegerField(min_value=1, max_value=INT_MAX)
    sha256 = serializers.CharField(min_length=64, max_length=64)
    label_column = serializers.CharField(required=False, allow_null=True)
    columns = DataColumnSerializer(many=True)
    personal_data = serializers.BooleanField()
    legal_basis = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text=gettext_lazy("Required when the dataset holds personal data."),
    )
    collection_start = serializers.DateField(required=False, allow_null=True)
    collection_end = serializers.DateField(required=False, allow_null=True)


# --- Problems -----------------------------------------------------------------------------------


class ProblemSerializer(serializers.ModelSerializer):
    """A problem as listed."""

    sector = serializers.ChoiceField(choices=Sector.choices, read_only=True)
    visibility = NamedChoiceField(
        enum_name="ProblemVisibility", choices=Problem.Visibility.choices, read_only=True
    )
    stage = NamedChoiceField(
        enum_name="ProblemStage", choices=Problem.Stage.choices, read_only=True
    )
    proposer = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_ratified = serializers.BooleanField(read_only=True)

    class Meta:
        model = Problem
        fields = [
            "slug",
            "title",
            "sector",
            "summary",
            "visibility",
            "stage",
            "proposer",
            "current_revision",
            "ratified_revision",
            "is_ratified",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class DefinitionSerializer(serializers.ModelSerializer):
    """The current revision's definition: what models of the problem are held to."""

    task_type = task_type_field(read_only=True)
    metric = metric_field(read_only=True)
    features = FeaturesField(read_only=True)
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = ProblemRevision
        fields = [
            "number",
            "task_type",
            "label_column",
            "features",
            "metric",
            "threshold",
            "change_note",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_created_by(self, revision: ProblemRevision) -> str | None:
        return _username(revision.created_by)


class ParticipantsSummarySerializer(serializers.Serializer):
    """Institution slugs by role (active participants) and by pending state."""

    contributors = serializers.ListField(child=serializers.SlugField())
    validators = serializers.ListField(child=serializers.SlugField())
    observers = serializers.ListField(child=serializers.SlugField())
    invited = serializers.ListField(child=serializers.SlugField())
    requested = serializers.ListField(child=serializers.SlugField())
    awaiting_ratification = serializers.ListField(
        child=serializers.SlugField(),
        help_text=gettext_lazy(
            "Contributors and validators that have not ratified the current revision."
        ),
    )


class ProblemDetailSerializer(ProblemSerializer):
    """A problem with its current definition, participants and agreement state."""

    # The view reads `definition`, `participants`, `effective_agreement` and
    # `pending_agreement` once and passes them in the context.

    proposed_by = serializers.SerializerMethodField()
    definition = serializers.SerializerMethodField()
    participants = serializers.SerializerMethodField()
    effective_agreement = serializers.SerializerMethodField()
    pending_agreement = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta(ProblemSerializer.Meta):
        fields = [
            *ProblemSerializer.Meta.fields,
            "question",
            "proposed_by",
            "definition",
            "participants",
            "effective_agreement",
            "pending_agreement",
            "page_url",
        ]
        read_only_fields = fields

    def get_proposed_by(self, problem: Problem) -> str | None:
        return _username(problem.proposed_by)

    @extend_schema_field(DefinitionSerializer)
    def get_definition(self, problem: Problem) -> dict:
        return DefinitionSerializer(self.context["definition"]).data

    @extend_schema_field(ParticipantsSummarySerializer)
    def get_participants(self, problem: Problem) -> dict:
        return self.context["participants"]

    def get_effective_agreement(self, problem: Problem) -> int | None:
        return self.context["effective_agreement"]

    def get_pending_agreement(self, problem: Problem) -> int | None:
        return self.context["pending_agreement"]

    def get_page_url(self, problem: Problem) -> str:
        request = self.context.get("request")
        path = problem.get_absolute_url()
        return request.build_absolute_uri(path) if request is not None else path


class ProblemProposeSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=80)
    title = serializers.CharField(max_length=200)
    sector = serializers.ChoiceField(choices=Sector.choices)
    summary = serializers.CharField()
    question = serializers.CharField()
    task_type = task_type_field()
    label_column = serializers.CharField(max_length=100)
    features = FeaturesField()
    metric = metric_field()
    threshold = serializers.FloatField()
    visibility = NamedChoiceField(
        enum_name="ProblemVisibility",
        choices=Problem.Visibility.choices,
        required=False,
        default=Problem.Visibility.LISTED,
    )
    role = participation_role_field(
        required=False,
        default=Participation.Role.CONTRIBUTOR,
        help_text=gettext_lazy("The proposing institution's own role in the problem."),
    )


class ProblemUpdateSerializer(serializers.Serializer):
    """The descriptive fields; the definition changes only through a new revision."""

    title = serializers.CharField(max_length=200, required=False)
    sector = serializers.ChoiceField(choices=Sector.choices, required=False)
    summary = serializers.CharField(required=False)
    question = serializers.CharField(required=False)
    visibility = NamedChoiceField(
        enum_name="ProblemVisibility", choices=Problem.Visibility.choices, required=False
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        data = self.initial_data if isinstance(self.initial_data, dict) else {}
        unknown = sorted(str(key) for key in data if key not in self.fields)
        if unknown:
            raise serializers.ValidationError(
                _(
                    "These fields cannot be changed here: %(fields)s. The label, features, "
                    "metric and threshold change through a new revision."
                )
                % {"fields": ", ".join(unknown)}
            )
        return attrs


# --- Revisions and comments ---------------------------------------------------------------------


class RatificationSerializer(serializers.Serializer):
    institution = serializers.SlugField(source="institution.slug")
    institution_name = serializers.CharField(source="institution.name")
    ratified_by = serializers.SerializerMethodField()
    ratified_at = UtcDateTimeField(source="created_at")

    def get_ratified_by(self, ratification: Any) -> str | None:
        return _username(ratification.ratified_by)


class RevisionSerializer(DefinitionSerializer):
    """A revision, whether it is the current and the ratified one, and who ratified it."""

    ratifications = RatificationSerializer(many=True, read_only=True)
    is_current = serializers.SerializerMethodField()
    is_ratified = serializers.SerializerMethodField()

    class Meta(DefinitionSerializer.Meta):
        fields = [*DefinitionSerializer.Meta.fields, "is_current", "is_ratified", "ratifications"]
        read_only_fields = fields

    def get_is_current(self, revision: ProblemRevision) -> bool:
        return revision.number == revision.problem.current_revision

    def get_is_ratified(self, revision: ProblemRevision) -> bool:
        return revision.number == revision.problem.ratified_revision


class RevisionCreateSerializer(serializers.Serializer):
    task_type = task_type_field()
    label_column = serializers.CharField(max_length=100)
    features = FeaturesField()
    metric = metric_field()
    threshold = serializers.FloatField()
    change_note = serializers.CharField(required=False, allow_blank=True, default="")


class CommentSerializer(serializers.ModelSerializer):
    author = serializers.SerializerMethodField()
    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True)

    class Meta:
        model = ProblemComment
        fields = ["id", "revision", "author", "institution", "body", "created_at"]
        read_only_fields = fields

    def get_author(self, comment: ProblemComment) -> str | None:
        return _username(comment.author)


class CommentCreateSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=5000)


class FieldChangeSerializer(serializers.Serializer):
    field = serializers.CharField()
    label = serializers.CharField()
    old = serializers.JSONField()
    new = serializers.JSONField()


class KeyChangeSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    old = serializers.JSONField()
    new = serializers.JSONField()


class ColumnChangeSerializer(serializers.Serializer):
    name = serializers.CharField()
    changes = KeyChangeSerializer(many=True)


class ColumnsDiffSerializer(serializers.Serializer):
    added = FeatureSpecSerializer(many=True)
    removed = FeatureSpecSerializer(many=True)
    changed = ColumnChangeSerializer(many=True)
    reordered = serializers.BooleanField(
        help_text=gettext_lazy("The columns both revisions share come in another order.")
    )


class RevisionDiffSerializer(serializers.Serializer):
    """What changed from revision `from` to `to`: fields, and columns added, removed, changed."""

    to = serializers.IntegerField()
    change_note = serializers.CharField()
    fields = FieldChangeSerializer(many=True)
    columns = ColumnsDiffSerializer()
    unchanged_columns = serializers.ListField(child=serializers.CharField())
    changed = serializers.BooleanField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "from" is a Python keyword, so it cannot be declared as an attribute.
        return {"from": serializers.IntegerField(), **fields}


# --- Participants -------------------------------------------------------------------------------


class ParticipationSerializer(serializers.ModelSerializer):
    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    institution_name = serializers.CharField(source="institution.name", read_only=True)
    role = participation_role_field(read_only=True)
    status = NamedChoiceField(
        enum_name="ParticipationStatus", choices=Participation.Status.choices, read_only=True
    )
    requested_by = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()

    class Meta:
        model = Participation
        fields = [
            "institution",
            "institution_name",
            "role",
            "status",
            "message",
            "requested_by",
            "decided_by",
            "decided_at",
            "left_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_requested_by(self, participation: Participation) -> str | None:
        return _username(participation.requested_by)

    def get_decided_by(self, participation: Participation) -> str | None:
        return _username(participation.decided_by)


class ParticipantInviteSerializer(serializers.Serializer):
    institution = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Institution.objects.filter(status=Institution.Status.ADMITTED),
        help_text=gettext_lazy("The slug of an admitted institution."),
    )
    role = participation_role_field()
    message = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ProblemJoinSerializer(serializers.Serializer):
    role = participation_role_field()
    message = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


# --- Datasets -----------------------------------------------------------------------------------


class DatasetSerializer(serializers.ModelSerializer):
    institution = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    columns = DataColumnsField(read_only=True)
    status = NamedChoiceField(
        enum_name="DatasetStatus", choices=Dataset.Status.choices, read_only=True
    )
    registered_by = serializers.SerializerMethodField()
    fits_current_revision = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id",
            "institution",
            "name",
            "description",
            "site_key",
            "row_count",
            "sha256",
            "label_column",
            "columns",
            "collection_start",
            "collection_end",
            "personal_data",
            "legal_basis",
            "revision",
            "fits_current_revision",
            "status",
            "registered_by",
            "created_at",
            "withdrawn_at",
        ]
        read_only_fields = fields

    def get_registered_by(self, dataset: Dataset) -> str | None:
        return _username(dataset.registered_by)

    def get_fits_current_revision(self, dataset: Dataset) -> bool:
        """Checked against the problem's current revision (and so usable in rounds)."""
        return dataset.revision == dataset.problem.current_revision


# --- Agreements ---------------------------------------------------------------------------------


class TermsSerializer(serializers.Serializer):
    """The structured terms of an agreement version, which machines enforce."""

    purpose = serializers.CharField()
    model_families = serializers.ListField(child=model_family_field())
    min_contributors = serializers.IntegerField(min_value=2, max_value=MAX_CONTRIBUTORS)
    secure_aggregation = serializers.BooleanField()
    dp_max_epsilon = serializers.FloatField(
        allow_null=True,
        help_text=gettext_lazy("Maximum epsilon per run; null: differential privacy not required."),
    )
    download_scope = NamedChoiceField(enum_name="DownloadScope", choices=DownloadScope.choices)
    commercial_use = serializers.BooleanField()
    revenue_sharing = serializers.CharField(allow_blank=True)
    expires_on = serializers.DateField()
    clauses = serializers.CharField(allow_blank=True)


class AgreementDraftSerializer(serializers.Serializer):
    """The terms of a new version (a draft, or an amendment of the effective one)."""

    purpose = serializers.CharField()
    model_families = serializers.ListField(child=model_family_field(), allow_empty=False)
    min_contributors = serializers.IntegerField(min_value=2, max_value=MAX_CONTRIBUTORS)
    secure_aggregation = serializers.BooleanField(required=False, default=False)
    dp_max_epsilon = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        help_text=gettext_lazy("Maximum epsilon per run; null: differential privacy not required."),
    )
    download_scope = NamedChoiceField(enum_name="DownloadScope", choices=DownloadScope.choices)
    commercial_use = serializers.BooleanField(required=False, default=False)
    revenue_sharing = serializers.CharField(required=False, allow_blank=True, default="")
    expires_on = serializers.DateField()
    clauses = serializers.CharField(required=False, allow_blank=True, default="")
    change_note = serializers.CharField(required=False, allow_blank=True, default="")


class AgreementVersionSerializer(serializers.ModelSerializer):
    """A version as listed: its state and the hash of its canonical terms."""

    status = NamedChoiceField(
        enum_name="AgreementStatus", choices=AgreementVersion.Status.choices, read_only=True
    )
    created_by = serializers.SerializerMethodField()
    terms = serializers.SerializerMethodField()

    class Meta:
        model = AgreementVersion
        fields = [
            "number",
            "status",
            "terms",
            "terms_sha256",
            "change_note",
            "created_by",
            "created_at",
            "effective_at",
            "ended_at",
        ]
        read_only_fields = fields

    def get_created_by(self, version: AgreementVersion) -> str | None:
        return _username(version.created_by)

    @extend_schema_field(TermsSerializer)
    def get_terms(self, version: AgreementVersion) -> dict:
        return TermsSerializer(version.terms()).data


class ApprovalRowSerializer(serializers.Serializer):
    """One institution's line in the approvals matrix of a version."""

    institution = serializers.SlugField()
    institution_name = serializers.CharField()
    contributor = serializers.BooleanField(
        help_text=gettext_lazy("Whether the institution is an active contributor now.")
    )
    decision = NamedChoiceField(
        enum_name="AgreementDecision",
        choices=[
            ("awaiting", gettext_lazy("Awaiting a decision")),
            *AgreementApproval.Decision.choices,
            ("revoked", gettext_lazy("Approval revoked")),
        ],
    )
    decided_by = serializers.CharField(allow_null=True)
    decided_at = UtcDateTimeField(allow_null=True)
    terms_sha256 = serializers.CharField(
        allow_blank=True, help_text=gettext_lazy("The hash of the terms the steward decided on.")
    )
    reason = serializers.CharField(allow_blank=True)
    revoked_by = serializers.CharField(allow_null=True)
    revoked_at = UtcDateTimeField(allow_null=True)
    revoke_reason = serializers.CharField(allow_blank=True)


class AgreementVersionDetailSerializer(AgreementVersionSerializer):
    """A version with its canonical terms and every contributor's decision."""

    # The view passes `approvals` (the matrix rows) and `awaiting` in the context.

    canonical_terms = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    awaiting = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta(AgreementVersionSerializer.Meta):
        fields = [
            *AgreementVersionSerializer.Meta.fields,
            "canonical_terms",
            "approvals",
            "awaiting",
            "page_url",
        ]
        read_only_fields = fields

    def get_canonical_terms(self, version: AgreementVersion) -> dict[str, Any]:
        """The JSON whose SHA-256 (sorted keys, compact, UTF-8) is `terms_sha256`."""
        return version.canonical_terms()

    @extend_schema_field(ApprovalRowSerializer(many=True))
    def get_approvals(self, version: AgreementVersion) -> list:
        return ApprovalRowSerializer(self.context["approvals"], many=True).data

    def get_awaiting(self, version: AgreementVersion) -> list[str]:
        """Active contributors without a standing approval (institution slugs)."""
        return self.context["awaiting"]

    def get_page_url(self, version: AgreementVersion) -> str:
        request = self.context.get("request")
        path = version.get_absolute_url()
        return request.build_absolute_uri(path) if request is not None else path


class ApproveSerializer(serializers.Serializer):
    terms_sha256 = serializers.CharField(
        max_length=64,
        help_text=gettext_lazy(
            "The terms_sha256 of the version as you read it; stale terms are refused."
        ),
    )


# --- Policy check -------------------------------------------------------------------------------


class PolicyContributorSerializer(serializers.Serializer):
    institution = serializers.SlugField()
    dataset = serializers.IntegerField(help_text=gettext_lazy("The id of the dataset to use."))
    sha256 = serializers.CharField()


class PolicyExclusionSerializer(serializers.Serializer):
    institution = serializers.SlugField()
    reason = serializers.CharField()


class PolicyDecisionSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    reasons = serializers.ListField(
        child=serializers.CharField(),
        help_text=gettext_lazy("Every reason the run may not go ahead; empty when allowed."),
    )
    agreement_version = serializers.IntegerField(
        allow_null=True, help_text=gettext_lazy("The effective agreement version, if any.")
    )
    contributors = PolicyContributorSerializer(many=True)
    excluded = PolicyExclusionSerializer(many=True)


# --- Inbox --------------------------------------------------------------------------------------


class InboxItemSerializer(serializers.Serializer):
    kind = NamedChoiceField(
        enum_name="InboxKind",
        choices=[
            ("ratify", gettext_lazy("Ratify a revision")),
            ("invitation", gettext_lazy("Answer an invitation")),
            ("request", gettext_lazy("Decide on a request to join")),
            ("agreement", gettext_lazy("Decide on an agreement version")),
            ("dataset", gettext_lazy("Register a dataset")),
        ],
    )
    text = serializers.CharField()
    url = serializers.CharField(help_text=gettext_lazy("The portal page where it is done."))
    problem = serializers.SlugField()
    since = UtcDateTimeField()
