"""Who may act, and on what: the ``access_*`` helpers and the object permissions behind them.

Object permissions live in django-guardian: an institution's admins hold ``change_institution``
and ``manage_members`` on that institution only. ``membership_sync_permissions`` is the one
place that grants and revokes them, called by every service that changes a role or a status.

Every active person is also in one group per (institution, role), ``institution:<id>:<role>``.
Other apps grant object permissions to those groups (for instance "the data stewards of this
contributor may approve this agreement"), so a role change or a deactivation is reflected
everywhere at once, without those apps knowing about people.
"""

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.translation import gettext as _
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from alliance.models import Institution, Membership, Role

ADMIN_OBJECT_PERMS = ("alliance.change_institution", "alliance.manage_members")

User = AbstractBaseUser | AnonymousUser


def membership_of(actor: User | None) -> Membership | None:
    """The actor's membership, or None for anonymous visitors, staff and unaffiliated users."""
    if actor is None or not actor.is_authenticated:
        return None
    try:
        return actor.membership  # type: ignore[union-attr]
    except Membership.DoesNotExist:
        return None


def acting_membership(actor: User | None, *, roles: Iterable[str] | None = None) -> Membership:
    """The membership through which ``actor`` acts, or PermissionDenied saying why not.

    Only active users of admitted institutions act; a suspended institution's people can still
    log in and read, but every act stops here.
    """
    if actor is None or not actor.is_authenticated:
        raise PermissionDenied(_("Log in to do this."))
    # Read afresh, not from the actor's cached relation: a status may have changed since.
    membership = (
        Membership.objects.select_related("institution", "user").filter(user_id=actor.pk).first()
    )
    if membership is None or not membership.user.is_active:
        raise PermissionDenied(_("Only people who belong to a member institution can do this."))
    institution = membership.institution
    if institution.status != Institution.Status.ADMITTED:
        raise PermissionDenied(
            _("%(institution)s is %(status)s: its people cannot act in the alliance.")
            % {"institution": institution.name, "status": institution.get_status_display().lower()}
        )
    if roles is not None:
        roles = list(roles)
        if membership.role not in roles:
            names = ", ".join(str(Role(r).label) for r in roles)
            raise PermissionDenied(
                _("This needs one of these roles: %(roles)s.") % {"roles": names}
            )
    return membership


# Set by the portal's authentication (portal.common.auth) on a person read for this request
# together with their membership and institution: that reading is as fresh as a new one.
READ_WITH_MEMBERSHIP = "_read_with_membership"


def current_membership(
    actor: User | None, *, roles: Iterable[str] | None = None
) -> Membership | None:
    """``acting_membership``, or None where it would refuse; without a query of its own when the
    person was read with their membership for this request (a page's or API call's checks)."""
    if actor is None or not actor.is_authenticated:
        return None
    if not getattr(actor, READ_WITH_MEMBERSHIP, False):
        try:
            return acting_membership(actor, roles=roles)
        except PermissionDenied:
            return None
    membership = membership_of(actor)
    if (
        membership is None
        or not actor.is_active
        or membership.institution.status != Institution.Status.ADMITTED
        or (roles is not None and membership.role not in list(roles))
    ):
        return None
    return membership


def has_object_perm(actor: User, perm: str, obj: Institution) -> bool:
    """``actor.has_perm(perm, obj)`` as guardian answers it, in one query instead of two.

    Guardian's checker reads a person's own grants and their groups' in two queries; here one
    UNION reads both. With an object, Django's model backend grants nothing, so guardian's
    answer is the whole answer: inactive people have no permission, superusers all.
    """
    if not actor.is_active:
        return False
    if actor.is_superuser:
        return True
    app_label, codename = perm.split(".", 1)
    if app_label != obj._meta.app_label:
        return False
    granted = {
        "content_type": ContentType.objects.get_for_model(obj),
        "object_pk": str(obj.pk),
        "permission__codename": codename,
    }
    by_group = GroupObjectPermission.objects.filter(group__user=actor, **granted).values("pk")
    by_user = UserObjectPermission.objects.filter(user=actor, **granted).values("pk")
    return by_group.union(by_user).exists()


def require_people_manager(actor: User | None, membership: Membership | None = None) -> Membership:
    """The actor's own membership, if the actor manages its institution's people (its admins),
    and ``membership``, when given, is one of them; else PermissionDenied."""
    own = acting_membership(actor)
    if not actor.has_perm("alliance.manage_members", own.institution):  # type: ignore[union-attr]
        raise PermissionDenied(_("Only your institution's admins manage its people."))
    if membership is not None and membership.institution_id != own.institution_id:
        raise PermissionDenied(_("You can only manage people of your own institution."))
    return own


def require_staff(actor: User | None) -> None:
    if actor is None or not actor.is_authenticated or not actor.is_staff:  # type: ignore[union-attr]
        raise PermissionDenied(_("Only alliance staff can do this."))


def access_institution(actor: User | None, slug: str, *, perm: str | None = None) -> Institution:
    """The institution ``actor`` may see (and, with ``perm``, act on) by slug.

    Admitted institutions are public. Others (applied, rejected, suspended, withdrawn) are
    visible only to staff and to their own people; for anyone else they answer the same 404 as
    a missing slug. A visible institution without ``perm`` is a 403.
    """
    institution = Institution.objects.filter(slug=slug).first()
    if institution is None:
        raise Http404(_("No such institution."))
    is_staff = bool(actor is not None and actor.is_authenticated and actor.is_staff)  # type: ignore[union-attr]
    own = membership_of(actor)
    is_own = own is not None and own.institution_id == institution.pk
    if institution.status != Institution.Status.ADMITTED and not (is_staff or is_own):
        raise Http404(_("No such institution."))
    if perm is not None:
        if is_own:
            acting_membership(actor)  # a suspended institution's admins cannot act either
        if not actor.has_perm(perm, institution):  # type: ignore[union-attr]
            raise PermissionDenied(_("You may not do this for %(name)s.") % {"name": institution})
    return institution


def access_member(actor: User | None, membership_id: int) -> Membership:
    """A membership of the actor's own institution that the actor, its admin, may manage.

    People of other institutions answer 404, as if they did not exist.
    """
    own = acting_membership(actor)
    membership = (
        Membership.objects.select_related("user", "institution")
        .filter(pk=membership_id, institution=own.institution)
        .first()
    )
    if membership is None:
        raise Http404(_("No such person in your institution."))
    if not actor.has_perm("alliance.manage_members", own.institution):  # type: ignore[union-attr]
        raise PermissionDenied(_("Only your institution's admins manage its people."))
    return membership


def institution_group_name(institution_id: int, role: str) -> str:
    return f"institution:{institution_id}:{role}"


def institution_group(institution_id: int, role: str) -> Group:
    """The group of the institution's active people with ``role`` (created on first use)."""
    group, _created = Group.objects.get_or_create(name=institution_group_name(institution_id, role))
    return group


def membership_sync_permissions(membership: Membership) -> None:
    """Grant or revoke the object permissions and groups that follow from the membership."""
    user, institution = membership.user, membership.institution
    is_admin = membership.role == Role.ADMIN and user.is_active
    for perm in ADMIN_OBJECT_PERMS:
        if is_admin:
            assign_perm(perm, user, institution)
        else:
            remove_perm(perm, user, institution)
    wanted = institution_group(institution.pk, membership.role) if user.is_active else None
    for group in user.groups.filter(name__startswith="institution:"):
        if group != wanted:
            user.groups.remove(group)
    if wanted is not None:
        user.groups.add(wanted)
