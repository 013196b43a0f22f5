"""People and roles: invitations, accepting them, role changes, deactivation."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify
from django.utils.translation import gettext as _

from alliance.models import Membership, Role
from alliance.permissions import (
    membership_sync_permissions,
    require_people_manager,
)
from alliance.services.audit import audit_record
from alliance.services.notifications import absolute_url, email_notify
from portal.common.errors import ApplicationError, Conflict

User = get_user_model()


def username_for_email(email: str) -> str:
    """A free username derived from the email's local part (``mei-ling``, ``mei-ling-2``...)."""
    base = slugify(email.split("@", 1)[0])[:140] or "member"
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def invitation_url(user: AbstractBaseUser) -> str:
    """The one-time link that lets an invited person set a password.

    It is Django's password-reset token: it stops working once the password is set.
    """
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return absolute_url(reverse("invitation-accept", args=[uidb64, token]))


def invitation_send(*, membership: Membership) -> None:
    """Email the invited person their one-time link (after commit)."""
    email_notify(
        to=[membership.user.email],
        template="invitation",
        context={
            "membership": membership,
            "url": invitation_url(membership.user),
            "inviter": membership.invited_by,
        },
    )


def _active_admins_besides(membership: Membership) -> int:
    return (
        Membership.objects.filter(
            institution=membership.institution, role=Role.ADMIN, user__is_active=True
        )
        .exclude(pk=membership.pk)
        .count()
    )


def _lock_institution_people(membership: Membership) -> None:
    # Two admins demoting each other at once must not leave the institution without one.
    Membership.objects.select_for_update().filter(institution=membership.institution_id).count()


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ApplicationError(
            _("Unknown role %(role)s; choose one of %(roles)s.")
            % {"role": role, "roles": ", ".join(Role.values)}
        )


@transaction.atomic
def member_invite(
    *,
    actor: AbstractBaseUser,
    email: str,
    role: str,
    first_name: str = "",
    last_name: str = "",
) -> Membership:
    """An institution admin invites a colleague to the actor's institution with a role."""
    own = require_people_manager(actor)
    _check_role(role)
    email = User.objects.normalize_email(email.strip()).lower()
    if not email:
        raise ApplicationError(_("An email address is needed to send the invitation."))
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict(_("%(email)s already has an account in the portal.") % {"email": email})
    user = User(
        username=username_for_email(email),
        email=email,
        first_name=first_name.strip()[:150],
        last_name=last_name.strip()[:150],
    )
    user.set_unusable_password()
    user.save()
    membership = Membership.objects.create(
        user=user, institution=own.institution, role=role, invited_by=actor
    )
    membership_sync_permissions(membership)
    audit_record(
        actor=actor,
        action="member.invited",
        target=membership,
        subject_institution=own.institution,
        payload={"username": user.username, "email": email, "role": role},
    )
    invitation_send(membership=membership)
    return membership


@transaction.atomic
def member_accept_invitation(*, user: AbstractBaseUser, password: str) -> Membership:
    """The invited person sets a password; the token that brought them here is now spent.

    The caller checked the token; the password was validated by the form.
    """
    membership = Membership.objects.select_for_update().select_related("institution").get(user=user)
    user.set_password(password)
    user.save(update_fields=["password"])
    first_time = membership.joined_at is None
    if first_time:
        membership.joined_at = timezone.now()
        membership.save(update_fields=["joined_at"])
    audit_record(
        actor=user,
        action="member.joined" if first_time else "member.password_set",
        target=membership,
        subject_institution=membership.institution,
        payload={"username": user.get_username()},
    )
    return membership


@transaction.atomic
def member_resend_invitation(*, actor: AbstractBaseUser, membership: Membership) -> None:
    """Send a fresh invitation link to someone who has not joined yet."""
    require_people_manager(actor, membership)
    if not membership.is_pending:
        raise Conflict(_("%(user)s has already joined.") % {"user": membership.user.username})
    audit_record(
        actor=actor,
        action="member.invitation_resent",
        target=membership,
        subject_institution=membership.institution,
        payload={"username": membership.user.username},
    )
    invitation_send(membership=membership)


@transaction.atomic
def member_change_role(*, actor: AbstractBaseUser, membership: Membership, role: str) -> Membership:
    """Give a colleague another role; the institution always keeps at least one active admin."""
    require_people_manager(actor, membership)
    _check_role(role)
    _lock_institution_people(membership)
    membership.refresh_from_db()
    old_role = membership.role
    if old_role == role:
        return membership
    if old_role == Role.ADMIN and _active_admins_besides(membership) == 0:
        raise Conflict(
            _("%(user)s is the institution's last admin; make someone else admin first.")
            % {"user": membership.user.username}
        )
    membership.role = role
    membership.save(update_fields=["role"])
    membership_sync_permissions(membership)
    audit_record(
        actor=actor,
        action="member.role_changed",
        target=membership,
        subject_institution=membership.institution,
        payload={"username": membership.user.username, "from": old_role, "to": role},
    )
    return membership


@transaction.atomic
def member_deactivate(*, actor: AbstractBaseUser, membership: Membership) -> Membership:
    """Close a colleague's access; their history and audit events stay."""
    require_people_manager(actor, membership)
    _lock_institution_people(membership)
    membership.refresh_from_db()
    user = membership.user
    user.refresh_from_db()
    if not user.is_active:
        raise Conflict(_("%(user)s is already deactivated.") % {"user": user.username})
    if membership.role == Role.ADMIN and _active_admins_besides(membership) == 0:
        raise Conflict(
            _("%(user)s is the institution's last admin and cannot be removed.")
            % {"user": user.username}
        )
    user.is_active = False
    user.save(update_fields=["is_active"])
    membership_sync_permissions(membership)
    audit_record(
        actor=actor,
        action="member.deactivated",
        target=membership,
        subject_institution=membership.institution,
        payload={"username": user.username, "role": membership.role},
    )
    return membership


@transaction.atomic
def member_reactivate(*, actor: AbstractBaseUser, membership: Membership) -> Membership:
    """Give a deactivated colleague their access back, with the role they had."""
    require_people_manager(actor, membership)
    user = membership.user
    user.refresh_from_db()
    if user.is_active:
        raise Conflict(_("%(user)s is already active.") % {"user": user.username})
    user.is_active = True
    user.save(update_fields=["is_active"])
    membership_sync_permissions(membership)
    audit_record(
        actor=actor,
        action="member.reactivated",
        target=membership,
        subject_institution=membership.institution,
        payload={"username": user.username, "role": membership.role},
    )
    return membership
