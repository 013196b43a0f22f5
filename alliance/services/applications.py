"""Joining the alliance: an institution applies, alliance staff approve or reject."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from alliance.models import Institution, Membership, MembershipApplication, Role
from alliance.permissions import membership_sync_permissions, require_staff
from alliance.services.audit import audit_record
from alliance.services.members import invitation_send, username_for_email
from alliance.services.notifications import email_notify
from portal.common.errors import ApplicationError, Conflict

User = get_user_model()

# An institution that was turned down or left may apply again under the same name.
_REAPPLYING_STATUSES = (Institution.Status.REJECTED, Institution.Status.WITHDRAWN)


@transaction.atomic
def application_submit(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    name: str,
    sector: str,
    country: str,
    contact_name: str,
    contact_email: str,
    motivation: str,
    website: str = "",
    description: str = "",
    contact_title: str = "",
) -> MembershipApplication:
    """Record an institution's application; the institution exists from now on as "applied"."""
    name = name.strip()
    if not name:
        raise ApplicationError(_("The institution's name is required."))
    # URLs use ASCII slugs; a name written only in Chinese characters gets a generated one.
    slug = slugify(name)[:60] or f"member-{secrets.token_hex(4)}"
    contact_email = User.objects.normalize_email(contact_email.strip()).lower()
    if User.objects.filter(email__iexact=contact_email).exists():
        raise Conflict(
            _(
                "%(email)s already has an account in the portal. Ask your institution's admin, "
                "or alliance staff, instead of applying again."
            )
            % {"email": contact_email}
        )
    institution = (
        Institution.objects.select_for_update().filter(Q(slug=slug) | Q(name__iexact=name)).first()
    )
    if institution is None:
        institution = Institution(name=name, slug=slug)
    elif institution.status not in _REAPPLYING_STATUSES:
        if institution.status == Institution.Status.APPLIED:
            message = _("%(name)s has already applied; its application is being reviewed.")
        else:
            message = _("%(name)s is already known to the alliance; contact alliance staff.")
        raise Conflict(message % {"name": institution.name})
    institution.name = name
    institution.sector = sector
    institution.country = country.strip()
    institution.website = website.strip()
    institution.description = description.strip()
    institution.status = Institution.Status.APPLIED
    institution.status_reason = ""
    institution.full_clean()
    try:
        with transaction.atomic():
            institution.save()
            application = MembershipApplication.objects.create(
                institution=institution,
                contact_name=contact_name.strip(),
                contact_email=contact_email,
                contact_title=contact_title.strip(),
                motivation=motivation.strip(),
            )
    except IntegrityError as exc:  # a concurrent application for the same name won the race
        raise Conflict(
            _("%(name)s has already applied; its application is being reviewed.") % {"name": name}
        ) from exc
    audit_record(
        actor=actor,
        action="application.submitted",
        target=application,
        subject_institution=institution,
        payload={"institution": institution.slug, "sector": sector, "contact": contact_email},
    )
    email_notify(
        to=[contact_email],
        template="application_received",
        context={"application": application},
    )
    return application


def _lock_pending(application: MembershipApplication) -> MembershipApplication:
    locked = (
        MembershipApplication.objects.select_for_update()
        .select_related("institution")
        .get(pk=application.pk)
    )
    if locked.status != MembershipApplication.Status.PENDING:
        raise Conflict(
            _("This application was already %(status)s.")
            % {"status": locked.get_status_display().lower()}
        )
    return locked


@transaction.atomic
def application_approve(
    *, actor: AbstractBaseUser, application: MembershipApplication
) -> Membership:
    """Admit the institution and invite its contact person as the first institution admin."""
    require_staff(actor)
    application = _lock_pending(application)
    if User.objects.filter(email__iexact=application.contact_email).exists():
        raise Conflict(
            _("%(email)s already has an account; reject this application or change the contact.")
            % {"email": application.contact_email}
        )
    now = timezone.now()
    institution = application.institution
    institution.status = Institution.Status.ADMITTED
    institution.status_reason = ""
    institution.admitted_at = now
    institution.save(update_fields=["status", "status_reason", "admitted_at", "updated_at"])
    application.status = MembershipApplication.Status.APPROVED
    application.reviewed_by = actor
    application.reviewed_at = now
    application.save(update_fields=["status", "reviewed_by", "reviewed_at"])

    first_name, _sep, last_name = application.contact_name.partition(" ")
    user = User(
        username=username_for_email(application.contact_email),
        email=application.contact_email,
        first_name=first_name[:150],
        last_name=last_name[:150],
    )
    user.set_unusable_password()
    user.save()
    membership = Membership.objects.create(
        user=user, institution=institution, role=Role.ADMIN, invited_by=actor
    )
    membership_sync_permissions(membership)
    audit_record(
        actor=actor,
        action="application.approved",
        target=application,
        subject_institution=institution,
        payload={"institution": institution.slug},
    )
    audit_record(
        actor=actor,
        action="institution.admitted",
        target=institution,
        payload={"application": application.pk},
    )
    audit_record(
        actor=actor,
        action="member.invited",
        target=membership,
        subject_institution=institution,
        payload={"username": user.username, "email": user.email, "role": Role.ADMIN},
    )
    invitation_send(membership=membership)
    return membership


@transaction.atomic
def application_reject(
    *, actor: AbstractBaseUser, application: MembershipApplication, reason: str
) -> MembershipApplication:
    """Turn the application down; the applicant is told the reason by email."""
    require_staff(actor)
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give the applicant a reason for the rejection."))
    application = _lock_pending(application)
    now = timezone.now()
    application.status = MembershipApplication.Status.REJECTED
    application.decision_reason = reason
    application.reviewed_by = actor
    application.reviewed_at = now
    application.save(update_fields=["status", "decision_reason", "reviewed_by", "reviewed_at"])
    institution = application.institution
    institution.status = Institution.Status.REJECTED
    institution.status_reason = reason
    institution.save(update_fields=["status", "status_reason", "updated_at"])
    audit_record(
        actor=actor,
        action="application.rejected",
        target=application,
        subject_institution=institution,
        payload={"institution": institution.slug, "reason": reason},
    )
    email_notify(
        to=[application.contact_email],
        template="application_rejected",
        context={"application": application},
    )
    return application
