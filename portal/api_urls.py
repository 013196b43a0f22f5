"""The REST API under ``/api/v1/`` (namespace ``api``): every app's routes, schema, docs."""

from django.urls import NoReverseMatch, path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from alliance.api.urls import urlpatterns as alliance_urls
from portal.common.api import TokenObtainApi
from projects.api.urls import urlpatterns as projects_urls

app_name = "api"

ROOT_LINKS = (
    "docs",
    "schema",
    "token",
    "institution-list",
    "application-list",
    "member-list",
    "audit-event-list",
    "notification-list",
    "notification-preferences",
    "webhook-list",
    "problem-list",
    "inbox",
    "site-key-list",
    "site-health",
)


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([AllowAny])
def api_root(request: Request) -> Response:
    """Where to start: the documentation, the schema and every collection."""
    links = {}
    for name in ROOT_LINKS:
        try:
            links[name] = reverse(f"api:{name}", request=request)
        except NoReverseMatch:
            continue
    return Response(links)


urlpatterns = [
    path("", api_root, name="root"),
    path("auth/token/", TokenObtainApi.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its set-up script from ?script, not inline: the CSP allows no inline.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    *alliance_urls,
    *projects_urls,
]
