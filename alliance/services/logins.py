"""Login lockouts (portal.common.throttle): auditing a lockout, and staff unlocking one."""

from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from alliance.models import AuditEvent, Institution
from alliance.permissions import membership_of, require_staff
from alliance.services.audit import audit_record

User = get_user_model()


def _person(username: str | None) -> AbstractBaseUser | None:
    if not username:
        return None
    return User.objects.select_related("membership__institution").filter(username=username).first()


def _subject(user: AbstractBaseUser | None) -> Institution | None:
    membership = membership_of(user)
    return membership.institution if membership is not None else None


@transaction.atomic
def login_lockout_record(
    *, username: str | None, address: str | None, reached: list[str]
) -> AuditEvent | None:
    """Audit that a failed login just reached a limit (``reached``: "username", "address").

    A username's own lockout is recorded only for an account that exists: what someone typed
    as a username (perhaps a password by mistake) is not written into the trail otherwise.
    """
    user = _person(username)
    limits = [limit for limit in reached if limit != "username" or user is not None]
    if not limits:
        return None
    payload: dict[str, object] = {"limits": limits, "address": address or ""}
    if user is not None:
        payload["username"] = user.get_username()
    return audit_record(
        actor=None,
        action="login.locked_out",
        target=user,
        subject_institution=_subject(user),
        payload=payload,
    )


@transaction.atomic
def login_unlock(
    *, actor: AbstractBaseUser, username: str | None = None, address: str | None = None
) -> int:
    """Staff lift a lockout: every failure counted for this username and from this address is
    forgotten. Returns how many failures were cleared; audited as ``login.unlocked``."""
    require_staff(actor)
    if not username and not address:
        return 0
    match = Q()
    if username:
        match |= Q(username=username)
    if address:
        match |= Q(ip_address=address)
    rows = list(
        AccessAttempt.objects.select_for_update()
        .filter(match)
        .values_list("pk", "failures_since_start")
    )
    cleared = sum(failures for _pk, failures in rows)
    AccessAttempt.objects.filter(pk__in=[pk for pk, _failures in rows]).delete()
    user = _person(username)
    audit_record(
        actor=actor,
        action="login.unlocked",
        target=user,
        subject_institution=_subject(user),
        payload={"username": username or "", "address": address or "", "failures": cleared},
    )
    return cleared
