"""An institution's profile and its standing in the alliance: suspension, reinstatement, exit."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.translation import gettext as _

from alliance.models import Institution, Role
from alliance.permissions import acting_membership, require_staff
from alliance.services.audit import audit_record
from alliance.services.notifications import email_notify
from alliance.signals import institution_status_changed
from portal.common.errors import ApplicationError, Conflict

EDITABLE_FIELDS = ("sector", "country", "website", "description")


def _admin_emails(institution: Institution) -> list[str]:
    return list(
        institution.memberships.filter(role=Role.ADMIN, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def _lock(institution: Institution) -> Institution:
    return Institution.objects.select_for_update().get(pk=institution.pk)


@transaction.atomic
def institution_update(
    *, actor: AbstractBaseUser, institution: Institution, **changes: Any
) -> Institution:
    """An institution admin edits the public profile (not the name, slug or status)."""
    own = acting_membership(actor)
    if own.institution_id != institution.pk or not actor.has_perm(
        "alliance.change_institution", institution
    ):
        raise PermissionDenied(_("Only the institution's admins can edit its profile."))
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ApplicationError(
            _("These fields cannot be changed here: %(fields)s.")
            % {"fields": ", ".join(sorted(unknown))}
        )
    institution = _lock(institution)
    before = {field: getattr(institution, field) for field in changes}
    for field, value in changes.items():
        setattr(institution, field, value.strip() if isinstance(value, str) else value)
    institution.full_clean()
    changed = {f: getattr(institution, f) for f in changes if getattr(institution, f) != before[f]}
    if not changed:
        return institution
    institution.save(update_fields=[*changed, "updated_at"])
    audit_record(
        actor=actor,
        action="institution.updated",
        target=institution,
        payload={"changed": {f: {"from": before[f], "to": v} for f, v in changed.items()}},
    )
    return institution


def _set_status(
    *,
    actor: AbstractBaseUser,
    institution: Institution,
    allowed_from: tuple[str, ...],
    to: str,
    action: str,
    reason: str,
    email_template: str,
) -> Institution:
    institution = _lock(institution)
    if institution.status not in allowed_from:
        raise Conflict(
            _("%(name)s is %(status)s; this does not apply.")
            % {"name": institution.name, "status": institution.get_status_display().lower()}
        )
    previous = institution.status
    institution.status = to
    institution.status_reason = reason
    institution.save(update_fields=["status", "status_reason", "updated_at"])
    audit_record(
        actor=actor,
        action=action,
        target=institution,
        payload={"from": previous, "to": to, "reason": reason},
    )
    institution_status_changed.send(
        sender=Institution, actor=actor, institution=institution, previous=previous
    )
    recipients = _admin_emails(institution)
    if recipients:
        email_notify(to=recipients, template=email_template, context={"institution": institution})
    return institution


@transaction.atomic
def institution_suspend(
    *, actor: AbstractBaseUser, institution: Institution, reason: str
) -> Institution:
    """Staff suspend an admitted institution: its people can log in and read, but not act."""
    require_staff(actor)
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give the institution a reason for the suspension."))
    return _set_status(
        actor=actor,
        institution=institution,
        allowed_from=(Institution.Status.ADMITTED,),
        to=Institution.Status.SUSPENDED,
        action="institution.suspended",
        reason=reason,
        email_template="institution_suspended",
    )


@transaction.atomic
def institution_reinstate(
    *, actor: AbstractBaseUser, institution: Institution, reason: str = ""
) -> Institution:
    """Staff lift a suspension; the institution acts in the alliance again."""
    require_staff(actor)
    return _set_status(
        actor=actor,
        institution=institution,
        allowed_from=(Institution.Status.SUSPENDED,),
        to=Institution.Status.ADMITTED,
        action="institution.reinstated",
        reason=(reason or "").strip(),
        email_template="institution_reinstated",
    )


@transaction.atomic
def institution_withdraw(
    *, actor: AbstractBaseUser, institution: Institution, reason: str = ""
) -> Institution:
    """The institution's admin takes it out of the alliance (staff can record it for them)."""
    if not actor.is_staff:
        own = acting_membership(actor, roles=[Role.ADMIN])
        if own.institution_id != institution.pk:
            raise PermissionDenied(_("Only the institution's admins can withdraw it."))
    return _set_status(
        actor=actor,
        institution=institution,
        allowed_from=(Institution.Status.ADMITTED, Institution.Status.SUSPENDED),
        to=Institution.Status.WITHDRAWN,
        action="institution.withdrawn",
        reason=(reason or "").strip(),
        email_template="institution_withdrawn",
    )
