"""API views: each action parses input, fetches through an access helper, calls one service."""

from django.db.models import Q
from django.http import Http404
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import selectors, services
from alliance.api import serializers as s
from alliance.models import (
    Institution,
    MembershipApplication,
    Notification,
    SignedCheckpoint,
    Webhook,
)
from alliance.permissions import (
    access_institution,
    access_member,
    require_people_manager,
    require_staff,
)
from alliance.services import audit_log, notices, webhooks
from portal.common.pagination import AuditCursorPagination


class IsStaff(permissions.BasePermission):
    message = gettext_lazy("Only alliance staff can do this.")

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class InstitutionViewSet(viewsets.GenericViewSet):
    """Admitted institutions are public; their admins update their own profile."""

    lookup_field = "slug"
    serializer_class = s.InstitutionSerializer
    queryset = Institution.objects.none()

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.action in ("list", "retrieve"):
            return [permissions.AllowAny()]
        # The actions' own classes (IsStaff for suspend and reinstate), else authenticated:
        # a caller without permission is refused before the body or the state is looked at.
        return super().get_permissions()

    @extend_schema(
        parameters=[OpenApiParameter("sector", str, description="Only this sector.")],
        responses=s.InstitutionSerializer(many=True),
    )
    def list(self, request: Request) -> Response:
        institutions = selectors.institution_directory().order_by("name")
        sector = request.query_params.get("sector")
        if sector:
            institutions = institutions.filter(sector=sector)
        page = self.paginate_queryset(institutions)
        return self.get_paginated_response(s.InstitutionSerializer(page, many=True).data)

    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(s.InstitutionSerializer(access_institution(request.user, slug)).data)

    @extend_schema(request=s.InstitutionUpdateSerializer, responses=s.InstitutionSerializer)
    def partial_update(self, request: Request, slug: str) -> Response:
        institution = access_institution(request.user, slug, perm="alliance.change_institution")
        data = s.InstitutionUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        institution = services.institution_update(
            actor=request.user, institution=institution, **data.validated_data
        )
        return Response(s.InstitutionSerializer(institution).data)

    @extend_schema(request=s.ReasonSerializer, responses=s.InstitutionSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def suspend(self, request: Request, slug: str) -> Response:
        institution = access_institution(request.user, slug)
        data = s.ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        institution = services.institution_suspend(
            actor=request.user, institution=institution, reason=data.validated_data["reason"]
        )
        return Response(s.InstitutionSerializer(institution).data)

    @extend_schema(request=s.OptionalReasonSerializer, responses=s.InstitutionSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def reinstate(self, request: Request, slug: str) -> Response:
        institution = access_institution(request.user, slug)
        data = s.OptionalReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        institution = services.institution_reinstate(
            actor=request.user, institution=institution, reason=data.validated_data["reason"]
        )
        return Response(s.InstitutionSerializer(institution).data)


class ApplicationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Anyone may apply; alliance staff review the queue and decide."""

    serializer_class = s.ApplicationSerializer

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.action == "create":
            return [permissions.AllowAny()]
        return [IsStaff()]

    def get_queryset(self):
        applications = MembershipApplication.objects.select_related(
            "institution", "reviewed_by"
        ).order_by("-submitted_at")
        wanted = self.request.query_params.get("status")
        if wanted:
            applications = applications.filter(status=wanted)
        return applications

    @extend_schema(
        request=s.ApplicationCreateSerializer,
        responses={201: s.ApplicationReceiptSerializer},
    )
    def create(self, request: Request) -> Response:
        data = s.ApplicationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        application = services.application_submit(actor=request.user, **data.validated_data)
        return Response(
            s.ApplicationReceiptSerializer(application).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses=s.ApplicationSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        application = self.get_object()
        services.application_approve(actor=request.user, application=application)
        application.refresh_from_db()
        return Response(s.ApplicationSerializer(application).data)

    @extend_schema(request=s.ReasonSerializer, responses=s.ApplicationSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        application = self.get_object()
        data = s.ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        application = services.application_reject(
            actor=request.user, application=application, reason=data.validated_data["reason"]
        )
        return Response(s.ApplicationSerializer(application).data)


class MemberViewSet(viewsets.GenericViewSet):
    """The people of my institution; its admins invite, change roles and deactivate."""

    serializer_class = s.MemberSerializer

    def get_queryset(self):
        return selectors.member_list_for(self.request.user)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.MemberSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        membership = self.get_queryset().filter(pk=pk).first() if pk.isdigit() else None
        if membership is None:
            raise Http404
        return Response(s.MemberSerializer(membership).data)

    @extend_schema(request=s.MemberInviteSerializer, responses={201: s.MemberSerializer})
    def create(self, request: Request) -> Response:
        require_people_manager(request.user)  # 403 before any 400 about the body
        data = s.MemberInviteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_invite(actor=request.user, **data.validated_data)
        return Response(s.MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    def _member(self, request: Request, pk: str):
        if not pk.isdigit():
            raise Http404
        return access_member(request.user, int(pk))

    @extend_schema(request=s.MemberRoleSerializer, responses=s.MemberSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        membership = self._member(request, pk)
        data = s.MemberRoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_change_role(
            actor=request.user, membership=membership, role=data.validated_data["role"]
        )
        return Response(s.MemberSerializer(membership).data)

    @extend_schema(request=None, responses=s.MemberSerializer)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        membership = services.member_deactivate(
            actor=request.user, membership=self._member(request, pk)
        )
        return Response(s.MemberSerializer(membership).data)

    @extend_schema(request=None, responses=s.MemberSerializer)
    @action(detail=True, methods=["post"])
    def reactivate(self, request: Request, pk: str) -> Response:
        membership = services.member_reactivate(
            actor=request.user, membership=self._member(request, pk)
        )
        return Response(s.MemberSerializer(membership).data)

    @extend_schema(request=None, responses={202: None})
    @action(detail=True, methods=["post"], url_path="resend-invitation")
    def resend_invitation(self, request: Request, pk: str) -> Response:
        services.member_resend_invitation(actor=request.user, membership=self._member(request, pk))
        return Response({"detail": _("Invitation sent.")}, status=status.HTTP_202_ACCEPTED)


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Audit events: staff see all, members those of or about their institution. Read-only."""

    serializer_class = s.AuditEventSerializer
    pagination_class = AuditCursorPagination  # newest first; deep pages cost what the first does
    lookup_field = "seq"
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        events = selectors.audit_event_list_for(self.request.user)
        params = self.request.query_params
        if params.get("action"):
            events = events.filter(action=params["action"])
        if params.get("institution"):
            slug = params["institution"]
            events = events.filter(
                Q(actor_institution__slug=slug) | Q(subject_institution__slug=slug)
            )
        return events.order_by("-seq")

    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="Only this action, e.g. member.invited."),
            OpenApiParameter("institution", str, description="Only events of this institution."),
        ]
    )
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[s.InclusionProofQuerySerializer],
        responses={200: s.InclusionProofSerializer, 404: None},
    )
    @action(detail=True, methods=["get"], url_path="inclusion-proof", pagination_class=None)
    def inclusion_proof(self, request: Request, seq: str) -> Response:
        """Proof that this event is in a signed checkpoint's tree (RFC 6962 audit path).

        Verify it offline with `scripts/verify_inclusion.py`. Only events you may read.
        """
        event = self.get_object()
        query = s.InclusionProofQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        proof = audit_log.audit_inclusion_proof(
            seq=event.seq, size=query.validated_data.get("size")
        )
        return Response(
            s.InclusionProofSerializer(
                {
                    "seq": proof.seq,
                    "leaf_index": proof.leaf_index,
                    "tree_size": proof.tree_size,
                    "entry": proof.entry.decode(),
                    "leaf_hash": proof.leaf_hash.hex(),
                    "proof": [h.hex() for h in proof.proof],
                    "checkpoint": proof.checkpoint,
                }
            ).data
        )

    @extend_schema(responses=s.ChainVerificationSerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        """Recompute the whole chain, as `manage.py verify_audit` does (staff only)."""
        require_staff(request.user)
        result = services.audit_verify()
        return Response(
            s.ChainVerificationSerializer(
                {
                    "ok": result.ok,
                    "count": result.count,
                    "first_broken_seq": result.first_broken_seq,
                    "reason": result.reason,
                }
            ).data
        )


class AuditCheckpointViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log's signed checkpoints, newest first: every member may poll and keep them."""

    serializer_class = s.SignedCheckpointSerializer
    lookup_field = "size"
    lookup_value_regex = r"\d{1,18}"
    queryset = SignedCheckpoint.objects.order_by("-size")

    @extend_schema(responses={200: s.SignedCheckpointSerializer, 404: None})
    @action(detail=False, methods=["get"], pagination_class=None)
    def latest(self, request: Request) -> Response:
        """The newest signed checkpoint (404 before the first event)."""
        checkpoint = audit_log.audit_checkpoint_latest()
        if checkpoint is None:
            raise Http404(_("No checkpoint has been signed yet."))
        return Response(s.SignedCheckpointSerializer(checkpoint).data)

    @extend_schema(responses=s.AuditLogKeySerializer)
    @action(detail=False, methods=["get"], pagination_class=None)
    def key(self, request: Request) -> Response:
        """The log's name and signed-note verifier key, to check checkpoints offline."""
        return Response(
            s.AuditLogKeySerializer(
                {
                    "origin": audit_log.audit_log_origin(),
                    "verifier_key": audit_log.audit_log_public_key(),
                }
            ).data
        )

    @extend_schema(
        parameters=[s.ConsistencyProofQuerySerializer],
        responses={200: s.ConsistencyProofSerializer, 404: None},
    )
    @action(detail=False, methods=["get"], url_path="consistency-proof", pagination_class=None)
    def consistency_proof(self, request: Request) -> Response:
        """Proof that the tree of `first` events is a prefix of the signed tree of `second`."""
        query = s.ConsistencyProofQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        proof, second = audit_log.audit_consistency_proof(
            first=query.validated_data["first"], second=query.validated_data.get("second")
        )
        return Response(
            s.ConsistencyProofSerializer(
                {
                    "first": query.validated_data["first"],
                    "second": second,
                    "proof": [h.hex() for h in proof],
                }
            ).data
        )


class NotificationViewSet(viewsets.GenericViewSet):
    """What happened, told to me: my newest notifications first."""

    serializer_class = s.NotificationSerializer

    def get_queryset(self):
        return Notification.objects.filter(user_id=self.request.user.pk)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.NotificationSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: None})
    @action(detail=False, methods=["post"], url_path="read")
    def read(self, request: Request) -> Response:
        """Mark every notification of mine read."""
        count = notices.notifications_mark_read(actor=request.user)
        return Response({"marked": count})


class NotificationPreferenceViewSet(viewsets.GenericViewSet):
    """Which emails I get (the inbox lists everything anyway); every kind unless I say not."""

    serializer_class = s.NotificationPreferenceSerializer

    def _shown(self, preference) -> Response:
        return Response({name: getattr(preference, name) for name in notices.EMAIL_CHOICES})

    @extend_schema(responses=s.NotificationPreferenceSerializer)
    def retrieve(self, request: Request) -> Response:
        return self._shown(notices.preference_of(request.user))

    @extend_schema(
        request=s.NotificationPreferenceSerializer, responses=s.NotificationPreferenceSerializer
    )
    def partial_update(self, request: Request) -> Response:
        data = s.NotificationPreferenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._shown(notices.preference_update(actor=request.user, **data.validated_data))


class WebhookViewSet(viewsets.GenericViewSet):
    """My institution's webhooks, managed by its admins; each delivery is recorded."""

    serializer_class = s.WebhookSerializer
    queryset = Webhook.objects.none()  # the schema's; requests read get_queryset

    def _institution(self) -> Institution:
        return webhooks.webhook_manager_institution(self.request.user)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Webhook.objects.none()
        return Webhook.objects.filter(institution=self._institution()).select_related("institution")

    def _webhook(self, pk: str) -> Webhook:
        mine = self.get_queryset()  # 403 for who manages no webhooks, whatever the id
        found = mine.filter(pk=pk).first() if str(pk).isdigit() else None
        if found is None:
            raise Http404(_("Your institution has no such webhook."))
        return found

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset().order_by("pk"))
        return self.get_paginated_response(s.WebhookSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.WebhookSerializer(self._webhook(pk)).data)

    @extend_schema(request=s.WebhookInputSerializer, responses={201: s.WebhookWithSecretSerializer})
    def create(self, request: Request) -> Response:
        institution = self._institution()  # 403 before any 400 about the body
        data = s.WebhookInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook = webhooks.webhook_create(
            actor=request.user, institution=institution, **data.validated_data
        )
        return Response(s.WebhookWithSecretSerializer(webhook).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.WebhookChangeSerializer, responses=s.WebhookSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        webhook = self._webhook(pk)
        data = s.WebhookChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook = webhooks.webhook_update(
            actor=request.user, webhook=webhook, **data.validated_data
        )
        return Response(s.WebhookSerializer(webhook).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        webhooks.webhook_delete(actor=request.user, webhook=self._webhook(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.WebhookWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str) -> Response:
        webhook = webhooks.webhook_rotate_secret(actor=request.user, webhook=self._webhook(pk))
        return Response(s.WebhookWithSecretSerializer(webhook).data)

    @extend_schema(request=None, responses=s.WebhookSecretSerializer)
    @action(detail=True, methods=["post"], url_path="reveal-secret")
    def reveal_secret(self, request: Request, pk: str) -> Response:
        secret = webhooks.webhook_reveal_secret(actor=request.user, webhook=self._webhook(pk))
        return Response({"secret": secret})

    @extend_schema(responses=s.WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str) -> Response:
        webhook = self._webhook(pk)
        page = self.paginate_queryset(webhook.deliveries.order_by("-created_at", "-pk"))
        return self.get_paginated_response(s.WebhookDeliverySerializer(page, many=True).data)
