from django.urls import path

from alliance import audit_views, notice_views, views

urlpatterns = [
    path("apply/", views.apply, name="apply"),
    path("apply/thanks/", views.apply_thanks, name="apply-thanks"),
    path("invitation/<uidb64>/<token>/", views.invitation_accept, name="invitation-accept"),
    path("institutions/<slug:slug>/", views.institution_detail, name="institution-detail"),
    path("institutions/<slug:slug>/edit/", views.institution_edit, name="institution-edit"),
    path(
        "my/institution/people/<int:membership_id>/<str:action>/",
        views.member_action,
        name="member-action",
    ),
    path("my/notifications/", notice_views.notification_settings, name="notification-settings"),
    path("my/notifications/read/", notice_views.notifications_read, name="notifications-read"),
    path("my/institution/webhooks/", notice_views.webhook_list, name="webhook-list"),
    path("my/institution/webhooks/<int:pk>/", notice_views.webhook_detail, name="webhook-detail"),
    path(
        "my/institution/webhooks/<int:pk>/<str:action>/",
        notice_views.webhook_action,
        name="webhook-action",
    ),
    path("staff/", views.staff_overview, name="staff-overview"),
    path("staff/mailbox/", views.staff_mailbox, name="staff-mailbox"),
    path("audit/", audit_views.audit_list, name="audit-list"),
    path("audit/export.<str:fmt>", audit_views.audit_export, name="audit-export"),
]
