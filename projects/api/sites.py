"""The API of member sites: the keys their workers sign with, and whether they are alive.

An institution's admin registers its site worker's public key and revokes it; every member
sees its own institution's keys, staff every institution's. Site health (the last signed
heartbeat of each admitted institution's worker) is readable by every member.
"""

from typing import Any

from django.http import Http404
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from alliance.api.serializers import ReasonSerializer
from alliance.models import Institution
from alliance.permissions import membership_of
from projects.models import SiteKey
from projects.services import sites


class SiteKeySerializer(serializers.ModelSerializer):
    institution = serializers.SlugField(source="institution.slug", read_only=True)
    registered_by = serializers.CharField(
        source="registered_by.get_username", read_only=True, allow_null=True, default=None
    )
    revoked_by = serializers.CharField(
        source="revoked_by.get_username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = SiteKey
        fields = [
            "institution",
            "fingerprint",
            "public_key",
            "label",
            "status",
            "registered_by",
            "registered_at",
            "retired_at",
            "revoked_by",
            "revoked_at",
            "reason",
        ]
        read_only_fields = fields


class SiteKeyRegisterSerializer(serializers.Serializer):
    public_key = serializers.CharField(
        max_length=100,
        help_text=gettext_lazy(
            "The base64 public key `manage.py site_keygen` printed at the site (44 characters)."
        ),
    )
    label = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text=gettext_lazy("A name for the key, e.g. the machine its worker runs on."),
    )


class SiteHealthSerializer(serializers.Serializer):
    institution = serializers.SlugField(source="institution.slug")
    name = serializers.CharField(source="institution.name")
    fingerprint = serializers.CharField(
        allow_null=True, help_text=gettext_lazy("The active key's fingerprint; null: none.")
    )
    heard_at = serializers.DateTimeField(
        allow_null=True, help_text=gettext_lazy("When its last signed heartbeat arrived.")
    )
    version = serializers.CharField(help_text=gettext_lazy("The site worker's version."))
    stale = serializers.BooleanField(
        help_text=gettext_lazy("Not heard from for longer than the portal waits (two minutes).")
    )


FINGERPRINT = OpenApiParameter(
    "fingerprint", str, OpenApiParameter.PATH, description="The key's fingerprint (32 hex)."
)


class SiteKeyViewSet(viewsets.GenericViewSet):
    """Site signing keys: your institution's (staff: every institution's)."""

    serializer_class = SiteKeySerializer

    def get_queryset(self) -> Any:
        keys = SiteKey.objects.select_related("institution", "registered_by", "revoked_by")
        user = self.request.user
        if user.is_staff:
            return keys.order_by("institution__slug", "-registered_at")
        membership = membership_of(user)
        if membership is None:
            return keys.none()
        return keys.filter(institution=membership.institution).order_by("-registered_at")

    @extend_schema(responses=SiteKeySerializer(many=True))
    def list(self, request: Request) -> Response:
        """Keys newest first, active, retired and revoked alike."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SiteKeySerializer(page, many=True).data)

    @extend_schema(
        request=SiteKeyRegisterSerializer,
        responses={
            201: SiteKeySerializer,
            400: OpenApiResponse(description=gettext_lazy("Not an Ed25519 public key.")),
            403: OpenApiResponse(description=gettext_lazy("Only the institution's admins.")),
            409: OpenApiResponse(description=gettext_lazy("The key is already registered.")),
        },
    )
    def create(self, request: Request) -> Response:
        """Register your site worker's public key (institution admins); it replaces the active
        one, which is retired."""
        sites.site_keys_owner(request.user)  # who may, before what they sent
        data = SiteKeyRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = sites.site_key_register(actor=request.user, **data.validated_data)
        return Response(SiteKeySerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[FINGERPRINT],
        request=ReasonSerializer,
        responses={200: SiteKeySerializer, 409: OpenApiResponse(description="Already revoked.")},
    )
    def revoke(self, request: Request, fingerprint: str) -> Response:
        """Revoke a key that may have leaked (its institution's admins, or staff)."""
        key = self.get_queryset().filter(fingerprint=fingerprint).first()
        if key is None:
            raise Http404
        sites.check_may_revoke(request.user, key)  # who may, before what they sent
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = sites.site_key_revoke(
            actor=request.user, key=key, reason=data.validated_data["reason"]
        )
        return Response(SiteKeySerializer(key).data)


class SiteHealthViewSet(viewsets.GenericViewSet):
    """Each admitted institution's site worker: its key, and when it was last heard from."""

    serializer_class = SiteHealthSerializer

    @extend_schema(responses=SiteHealthSerializer(many=True))
    def list(self, request: Request) -> Response:
        institutions = Institution.objects.filter(status=Institution.Status.ADMITTED).order_by(
            "slug"
        )
        page = self.paginate_queryset(institutions)
        health = sites.site_health(list(page))
        rows = [
            {
                "institution": h.institution,
                "fingerprint": h.fingerprint,
                "heard_at": h.heard_at,
                "version": h.version,
                "stale": h.stale,
            }
            for h in health.values()
        ]
        return self.get_paginated_response(SiteHealthSerializer(rows, many=True).data)
