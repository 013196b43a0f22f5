"""The staff console's login lockouts: who failed to log in, from where, and unlocking them.

django-axes' own admin is switched off (``AXES_ENABLE_ADMIN = False``): deleting its rows by
hand would lift a lockout unaudited. Here the rows are read-only and the one action calls the
audited service ``login_unlock``.
"""

from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from alliance.services.logins import login_unlock


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def _recent(**match: Any) -> int:
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    attempts = AccessAttempt.objects.filter(attempt_time__gte=since, **match)
    return int(attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0)


@admin.register(AccessAttempt)
class LoginLockoutAdmin(admin.ModelAdmin):
    list_display = [
        "username",
        "ip_address",
        "failures_since_start",
        "attempt_time",
        "path_info",
        "blocked",
    ]
    list_filter = ["attempt_time"]
    search_fields = ["username", "ip_address"]
    fields = [*list_display[:-1], "user_agent"]
    readonly_fields = fields
    actions = ["unlock"]
    ordering = ["-attempt_time"]

    @admin.display(description=gettext_lazy("blocked now"), boolean=True)
    def blocked(self, obj: AccessAttempt) -> bool:
        return (
            _recent(username=obj.username) >= settings.LOGIN_FAILURES_PER_USER
            or _recent(ip_address=obj.ip_address) >= settings.LOGIN_FAILURES_PER_ADDRESS
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # unlocking is the audited action below

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_staff(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_staff(request)

    @admin.action(
        description=gettext_lazy("Unlock: forget the failures of these usernames and addresses")
    )
    def unlock(self, request: HttpRequest, queryset: QuerySet) -> None:
        pairs = sorted(set(queryset.values_list("username", "ip_address")), key=str)
        cleared = 0
        try:
            for username, address in pairs:
                cleared += login_unlock(actor=request.user, username=username, address=address)
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request,
            _("Unlocked %(count)d username and address pair(s); %(failures)d failure(s) forgotten.")
            % {"count": len(pairs), "failures": cleared},
            messages.SUCCESS,
        )
