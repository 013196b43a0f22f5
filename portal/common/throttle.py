"""Login throttling: django-axes counting failures per username and per client address.

Every way in that checks a password (the login form, the staff console's login and
``POST /api/v1/auth/token/``) goes through ``django.contrib.auth.authenticate`` with the request,
so axes' backend sees each attempt. A username with ``LOGIN_FAILURES_PER_USER`` failures, or an
address with ``LOGIN_FAILURES_PER_ADDRESS`` failures (over any usernames), is refused, even with
the right password, until ``LOGIN_LOCKOUT_MINUTES`` pass without another failure, or until staff
unlock it in the console (``alliance.services.logins.login_unlock``, audited). Reaching a limit
is itself audited (``login.locked_out``).
"""

import ipaddress
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from django.conf import settings
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _


def lockout_message() -> str:
    return _(
        "Too many failed logins for this username or from your address. Logging in is "
        "blocked for %(minutes)s minutes after the last failure; alliance staff can unlock "
        "it sooner."
    ) % {"minutes": settings.LOGIN_LOCKOUT_MINUTES}


def _valid_address(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind ``PORTAL_PROXY_COUNT`` trusted proxies the
    X-Forwarded-For entry the outermost of them added. Anything a client could have forged
    further left in that header is ignored, and so is anything that is not an address."""
    remote = _valid_address(request.META.get("REMOTE_ADDR"))
    proxies = settings.PORTAL_PROXY_COUNT
    if proxies <= 0:
        return remote
    hops = [h for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if len(hops) < proxies:
        return remote
    return _valid_address(hops[-proxies]) or remote


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes' database handler with a limit of its own for each lockout parameter.

    Axes compares one failure count (the largest over its parameters) with one limit,
    ``AXES_FAILURE_LIMIT`` (the per-user limit here). The count this handler reports is the
    per-user failures, or the per-address failures scaled to the per-user limit, whichever is
    larger: with U and A the two limits, ``floor(address_failures * U / A) >= U`` exactly when
    ``address_failures >= A``, so each parameter meets its own limit and no other.
    """

    def failure_counts(self, request: Any, credentials: dict | None = None) -> tuple[int, int]:
        """Failures within the cool-off period: (for this username, from this address)."""
        by_user, by_address = self.get_user_attempts(request, credentials)
        return _sum(by_user), _sum(by_address)

    def get_failures(self, request: Any, credentials: dict | None = None) -> int:
        by_user, by_address = self.failure_counts(request, credentials)
        per_user = settings.LOGIN_FAILURES_PER_USER
        per_address = settings.LOGIN_FAILURES_PER_ADDRESS
        return max(by_user, by_address * per_user // per_address)

    def reached(self, request: Any, credentials: dict | None = None) -> list[str]:
        """Which limits the failure just recorded has reached for the first time.

        Exactly at the limit, so that a lockout is audited once, not at every later failure.
        """
        by_user, by_address = self.failure_counts(request, credentials)
        reached = []
        if by_user == settings.LOGIN_FAILURES_PER_USER:
            reached.append("username")
        if by_address == settings.LOGIN_FAILURES_PER_ADDRESS:
            reached.append("address")
        return reached


def _sum(attempts: QuerySet) -> int:
    return int(attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0)


def locked_out_username(request: Any, credentials: dict | None) -> str:
    return get_client_username(request, credentials) or ""


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """429 with a clear message: JSON for the API, the login page's look for people."""
    message = lockout_message()
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=429)
    return render(
        request,
        "registration/locked_out.html",
        {"message": message, "minutes": settings.LOGIN_LOCKOUT_MINUTES},
        status=429,
    )
