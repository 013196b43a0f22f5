from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.routers import DefaultRouter

from alliance.api import views

router = DefaultRouter()
router.register("institutions", views.InstitutionViewSet, basename="institution")
router.register("applications", views.ApplicationViewSet, basename="application")
router.register("members", views.MemberViewSet, basename="member")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")

app_name = "api"

urlpatterns = [
    path("auth/token/", ObtainAuthToken.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    *router.urls,
]
