"""The alliance app's API routes; ``portal.api_urls`` mounts them under ``/api/v1/``."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from alliance.api import views

router = SimpleRouter()
router.register("institutions", views.InstitutionViewSet, basename="institution")
router.register("applications", views.ApplicationViewSet, basename="application")
router.register("members", views.MemberViewSet, basename="member")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("audit-checkpoints", views.AuditCheckpointViewSet, basename="audit-checkpoint")
router.register("notifications", views.NotificationViewSet, basename="notification")
router.register("webhooks", views.WebhookViewSet, basename="webhook")

urlpatterns = [
    *router.urls,
    path(
        "notification-preferences/",
        views.NotificationPreferenceViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="notification-preferences",
    ),
]
