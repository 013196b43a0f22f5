"""The alliance staff console: review applications, suspend members, read the audit trail.

Admin actions call the same services as the portal and the API. Status changes go through
actions only, never through the edit forms, so that each one is checked and audited.
"""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from alliance import services
from alliance.forms import ReasonForm
from alliance.models import (
    AuditEvent,
    Institution,
    Membership,
    MembershipApplication,
    SignedCheckpoint,
)
from portal.common.errors import ApplicationError, error_text

User = get_user_model()


def _apply_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    act: Callable[[Any], Any],
    done: str,
) -> None:
    """Run a service on each selected row; report successes and each refusal with its reason."""
    succeeded = 0
    for obj in queryset:
        try:
            act(obj)
        except (ApplicationError, PermissionDenied, ValidationError) as exc:
            modeladmin.message_user(request, f"{obj}: {error_text(exc)}", messages.ERROR)
        else:
            succeeded += 1
    if succeeded:
        modeladmin.message_user(request, done % {"count": succeeded}, messages.SUCCESS)


def _ask_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action_name: str,
    title: str,
    act: Callable[[Any, str], Any],
    done: str,
) -> HttpResponse | None:
    """An intermediate page that asks for the reason, then runs the action with it."""
    form = ReasonForm(request.POST if "confirm" in request.POST else None)
    if "confirm" in request.POST and form.is_valid():
        reason = form.cleaned_data["reason"]
        _apply_each(modeladmin, request, queryset, lambda obj: act(obj, reason), done)
        return None
    return TemplateResponse(
        request,
        "admin/alliance/reason_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "objects": queryset,
            "form": form,
            "action_name": action_name,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": modeladmin.model._meta,
        },
    )


@admin.register(MembershipApplication)
class MembershipApplicationAdmin(admin.ModelAdmin):
    list_display = [
        "institution",
        "sector",
        "contact_name",
        "contact_email",
        "status",
        "submitted_at",
        "reviewed_by",
    ]
    list_filter = ["status", "institution__sector"]
    search_fields = ["institution__name", "contact_name", "contact_email"]
    list_select_related = ["institution", "reviewed_by"]
    actions = ["approve", "reject"]
    readonly_fields = [f.name for f in MembershipApplication._meta.fields]
    date_hierarchy = "submitted_at"

    @admin.display(description=gettext_lazy("sector"), ordering="institution__sector")
    def sector(self, obj: MembershipApplication) -> str:
        return obj.institution.get_sector_display()

    # --- The review page: Approve and Reject buttons instead of the read-only form's Save ---

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/approve/",
                view(self.approve_view),
                name="alliance_membershipapplication_approve",
            ),
            path(
                "<path:object_id>/reject/",
                view(self.reject_view),
                name="alliance_membershipapplication_reject",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Every field is read-only: deciding is done with the buttons, which call the services.
        hidden = ("show_save", "show_save_and_continue", "show_save_and_add_another")
        context = {**(extra_context or {}), **dict.fromkeys(hidden, False)}
        return super().change_view(request, object_id, form_url, context)

    def _reviewed(self, request: HttpRequest, object_id: str) -> MembershipApplication:
        application = self.get_object(request, unquote(object_id))
        if application is None or not self.has_view_or_change_permission(request, application):
            raise Http404(_("No such application."))
        return application

    def _review_page(self, application: MembershipApplication) -> HttpResponse:
        return redirect(
            reverse("admin:alliance_membershipapplication_change", args=[application.pk])
        )

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        application = self._reviewed(request, object_id)
        if request.method == "POST":
            try:
                services.application_approve(actor=request.user, application=application)
            except (ApplicationError, PermissionDenied, ValidationError) as exc:
                self.message_user(request, error_text(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    _(
                        "%(name)s is admitted. %(email)s is invited to set a password and act "
                        "as its first admin."
                    )
                    % {"name": application.institution.name, "email": application.contact_email},
                    messages.SUCCESS,
                )
        return self._review_page(application)

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Asks for the reason the applicant will read, then rejects."""
        application = self._reviewed(request, object_id)
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                services.application_reject(
                    actor=request.user,
                    application=application,
                    reason=form.cleaned_data["reason"],
                )
            except (ApplicationError, PermissionDenied, ValidationError) as exc:
                self.message_user(request, error_text(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    _("The application of %(name)s is rejected; the applicant is told why.")
                    % {"name": application.institution.name},
                    messages.SUCCESS,
                )
            return self._review_page(application)
        return TemplateResponse(
            request,
            "admin/alliance/membershipapplication/reject.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Reject the application of %(name)s")
                % {"name": application.institution.name},
                "original": application,
                "form": form,
                "opts": self.model._meta,
            },
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # applications come from the public form or the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=gettext_lazy("Approve: admit and invite the contact"))
    def approve(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_each(
            self,
            request,
            queryset,
            lambda app: services.application_approve(actor=request.user, application=app),
            _("%(count)d application(s) approved; invitations are on their way."),
        )

    @admin.action(description=gettext_lazy("Reject, with a reason for the applicant"))
    def reject(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _ask_reason(
            self,
            request,
            queryset,
            action_name="reject",
            title=_("Reject applications"),
            act=lambda app, reason: services.application_reject(
                actor=request.user, application=app, reason=reason
            ),
            done=_("%(count)d application(s) rejected; the applicants are told why."),
        )


class MembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "institution"
    fields = ["user", "role", "invited_at", "joined_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Institution)
class InstitutionAdmin(admin.ModelAdmin):
    list_display = ["name", "sector", "country", "status", "admitted_at"]
    list_filter = ["status", "sector"]
    search_fields = ["name", "slug", "country"]
    readonly_fields = ["slug", "status", "status_reason", "admitted_at", "created_at", "updated_at"]
    inlines = [MembershipInline]
    actions = ["suspend", "reinstate"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # institutions join through an application

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # their history stays; suspend or withdraw instead

    @admin.action(description=gettext_lazy("Suspend, with a reason"))
    def suspend(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _ask_reason(
            self,
            request,
            queryset,
            action_name="suspend",
            title=_("Suspend institutions"),
            act=lambda inst, reason: services.institution_suspend(
                actor=request.user, institution=inst, reason=reason
            ),
            done=_("%(count)d institution(s) suspended."),
        )

    @admin.action(description=gettext_lazy("Reinstate"))
    def reinstate(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_each(
            self,
            request,
            queryset,
            lambda inst: services.institution_reinstate(actor=request.user, institution=inst),
            _("%(count)d institution(s) reinstated."),
        )


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: no add, change or delete, whoever asks."""

    list_display = [
        "seq",
        "created_at",
        "action",
        "actor_username",
        "actor_institution",
        "subject_institution",
        "target_label",
        "short_hash",
    ]
    list_filter = ["action", "actor_institution", "subject_institution"]
    search_fields = ["action", "actor_username", "target_label", "hash"]
    list_select_related = ["actor_institution", "subject_institution"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=gettext_lazy("hash"))
    def short_hash(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SignedCheckpoint)
class SignedCheckpointAdmin(admin.ModelAdmin):
    """The audit log's signed checkpoints. Read-only: a signed head is never edited or removed."""

    list_display = ["size", "short_root", "created_at"]
    fields = ["size", "root", "created_at", "note"]
    readonly_fields = fields
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=gettext_lazy("root hash"))
    def short_root(self, obj: SignedCheckpoint) -> str:
        return obj.root[:16]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MembershipUserInline(admin.StackedInline):
    model = Membership
    fk_name = "user"
    fields = ["institution", "role", "invited_by", "invited_at", "joined_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    inlines = [MembershipUserInline]
    list_display = [
        "username",
        "email",
        "first_name",
        "last_name",
        "institution",
        "is_active",
        "is_staff",
    ]
    list_select_related = ["membership__institution"]
    list_filter = ["is_staff", "is_active", "membership__role", "membership__institution__sector"]

    @admin.display(description=gettext_lazy("institution"))
    def institution(self, obj: Any) -> str:
        membership = getattr(obj, "membership", None)
        return membership.institution.name if membership else "—"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit trail refers to people; deactivate them instead
