"""Signals the alliance sends so that other apps can follow its changes without being imported.

``alliance`` never imports ``projects``; when an institution's standing changes, apps that keep
state derived from it (a problem's stage, for instance) receive this signal inside the same
transaction, and their own audit events land in it too.
"""

from django.dispatch import Signal

# Sent with ``actor`` and ``institution`` (already saved with its new status) and ``previous``.
institution_status_changed = Signal()


def audit_login_lockout(sender: object, request: object, **kwargs: object) -> None:
    """django-axes' ``user_locked_out``: audit a failed login that reached a limit.

    Axes sends the signal at every failure past a limit; only the one that reached it is
    recorded (``LoginThrottleHandler.reached``), so a guesser cannot flood the audit trail.
    """
    from axes.handlers.proxy import AxesProxyHandler

    from alliance.services.logins import login_lockout_record

    handler = AxesProxyHandler.get_implementation()
    reached = getattr(handler, "reached", None)
    if request is None or reached is None:
        return
    limits = reached(request, getattr(request, "axes_credentials", None))
    if limits:
        login_lockout_record(
            username=kwargs.get("username"),  # type: ignore[arg-type]
            address=kwargs.get("ip_address"),  # type: ignore[arg-type]
            reached=limits,
        )
