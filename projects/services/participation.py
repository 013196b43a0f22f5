"""Who takes part in a problem: requests, invitations, decisions, departures."""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution, Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.models import Participation, Problem
from projects.permissions import problem_sync_permissions, require_participation_party
from projects.services.common import notify, require_problem_perm

MAX_MESSAGE = 2000


def _check_role(role: str) -> None:
    if role not in Participation.Role.values:
        raise ApplicationError(
            _("Choose a participation role: %(roles)s.")
            % {"roles": ", ".join(Participation.Role.values)}
        )


def _existing_conflict(participation: Participation) -> None:
    name = participation.institution.name
    if participation.status == Participation.Status.ACTIVE:
        raise Conflict(_("%(name)s already takes part in this problem.") % {"name": name})
    if participation.status == Participation.Status.REQUESTED:
        raise Conflict(
            _("%(name)s has already asked to join; decide on that request.") % {"name": name}
        )
    if participation.status == Participation.Status.INVITED:
        raise Conflict(_("%(name)s is already invited; its admins can accept.") % {"name": name})


def _open(
    *,
    actor: AbstractBaseUser,
    problem: Problem,
    institution: Institution,
    role: str,
    status: str,
    message: str,
) -> Participation:
    """Open a request or an invitation: a new row, or the institution's earlier declined,
    withdrawn or left one, reopened (one row per institution keeps its history together)."""
    message = (message or "").strip()[:MAX_MESSAGE]
    participation = (
        Participation.objects.select_for_update()
        .filter(problem=problem, institution=institution)
        .first()
    )
    if participation is None:
        return Participation.objects.create(
            problem=problem,
            institution=institution,
            role=role,
            status=status,
            message=message,
            requested_by=actor,
        )
    _existing_conflict(participation)
    participation.role = role
    participation.status = status
    participation.message = message
    participation.requested_by = actor
    participation.decided_by = None
    participation.decided_at = None
    participation.save()
    return participation


def _after_change(actor: AbstractBaseUser, problem: Problem) -> None:
    from projects.services.agreements import agreement_check_effective
    from projects.services.problems import problem_recompute_ratification

    # Lock and re-read the problem as problem_ratify does: a join and a last ratification must
    # not interleave, and a caller's copy may predate the current ratification.
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    problem_sync_permissions(problem)
    problem_recompute_ratification(actor=actor, problem=problem)
    agreement_check_effective(actor=actor, problem=problem)


@transaction.atomic
def participation_request(
    *, actor: AbstractBaseUser, problem: Problem, role: str, message: str = ""
) -> Participation:
    """An institution's admin asks to join a listed problem in a role."""
    membership = acting_membership(actor, roles=[Role.ADMIN])
    _check_role(role)
    if problem.visibility != Problem.Visibility.LISTED:
        raise PermissionDenied(_("This problem is by invitation only."))
    participation = _open(
        actor=actor,
        problem=problem,
        institution=membership.institution,
        role=role,
        status=Participation.Status.REQUESTED,
        message=message,
    )
    audit_record(
        actor=actor,
        action="participation.requested",
        target=problem,
        subject_institution=problem.proposer,
        payload={"institution": membership.institution.slug, "role": role},
    )
    notify(
        institution_ids=[problem.proposer_id],
        roles=[Role.ADMIN],
        template="participation_requested",
        context={
            "problem": problem,
            "participation": participation,
            "path": problem.get_absolute_url() + "#participants",
        },
    )
    return participation


@transaction.atomic
def participation_invite(
    *,
    actor: AbstractBaseUser,
    problem: Problem,
    institution: Institution,
    role: str,
    message: str = "",
) -> Participation:
    """The proposer's admin invites another admitted institution in a role."""
    require_problem_perm(actor, "projects.manage_participants", problem)
    _check_role(role)
    if institution.status != Institution.Status.ADMITTED:
        raise ApplicationError(
            _("%(name)s is not an active member of the alliance.") % {"name": institution.name}
        )
    participation = _open(
        actor=actor,
        problem=problem,
        institution=institution,
        role=role,
        status=Participation.Status.INVITED,
        message=message,
    )
    problem_sync_permissions(problem)  # the invited institution may now see the problem
    audit_record(
        actor=actor,
        action="participation.invited",
        target=problem,
        subject_institution=institution,
        payload={"institution": institution.slug, "role": role},
    )
    notify(
        institution_ids=[institution.pk],
        roles=[Role.ADMIN],
        template="participation_invited",
        context={
            "problem": problem,
            "participation": participation,
            "path": problem.get_absolute_url() + "#participants",
        },
    )
    return participation


def _locked(participation: Participation) -> Participation:
    """The participation read afresh under a row lock: two admins may answer at once."""
    return (
        Participation.objects.select_for_update()
        .select_related("problem", "institution")
        .get(pk=participation.pk)
    )


def _require_decider(actor: AbstractBaseUser, participation: Participation) -> None:
    """Requests are decided by the proposer's admins; invitations by the invitee's admins."""
    require_participation_party(actor, participation)
    problem = participation.problem
    if participation.status == Participation.Status.REQUESTED:
        require_problem_perm(actor, "projects.manage_participants", problem)
    elif participation.status == Participation.Status.INVITED:
        membership = acting_membership(actor, roles=[Role.ADMIN])
        if membership.institution_id != participation.institution_id:
            raise PermissionDenied(
                _("Only %(name)s's admins answer this invitation.")
                % {"name": participation.institution.name}
            )
    else:
        raise Conflict(
            _("There is nothing to decide: %(name)s is %(status)s.")
            % {
                "name": participation.institution.name,
                "status": participation.get_status_display().lower(),
            }
        )


@transaction.atomic
def participation_accept(*, actor: AbstractBaseUser, participation: Participation) -> Participation:
    """Accept a request (proposer's admin) or an invitation (invitee's admin)."""
    participation = _locked(participation)
    _require_decider(actor, participation)
    was = participation.status
    participation.status = Participation.Status.ACTIVE
    participation.decided_by = actor
    participation.decided_at = timezone.now()
    participation.left_at = None
    participation.save()
    problem = participation.problem
    audit_record(
        actor=actor,
        action="participation.accepted",
        target=problem,
        subject_institution=participation.institution,
        payload={
            "institution": participation.institution.slug,
            "role": participation.role,
            "was": was,
        },
    )
    _after_change(actor, problem)
    notify(
        institution_ids=[problem.proposer_id, participation.institution_id],
        roles=[Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER],
        template="participation_accepted",
        context={
            "problem": problem,
            "participation": participation,
            "path": problem.get_absolute_url(),
        },
        skip=actor,
    )
    return participation


@transaction.atomic
def participation_decline(
    *, actor: AbstractBaseUser, participation: Participation, reason: str = ""
) -> Participation:
    """Decline a request (proposer's admin) or an invitation (invitee's admin)."""
    participation = _locked(participation)
    _require_decider(actor, participation)
    was = participation.status
    participation.status = Participation.Status.DECLINED
    participation.decided_by = actor
    participation.decided_at = timezone.now()
    participation.save()
    problem = participation.problem
    problem_sync_permissions(problem)
    reason = (reason or "").strip()[:MAX_MESSAGE]
    audit_record(
        actor=actor,
        action="participation.declined",
        target=problem,
        subject_institution=participation.institution,
        payload={"institution": participation.institution.slug, "was": was, "reason": reason},
    )
    notify(
        institution_ids=[problem.proposer_id, participation.institution_id],
        roles=[Role.ADMIN],
        template="participation_declined",
        context={
            "problem": problem,
            "participation": participation,
            "reason": reason,
            "path": problem.get_absolute_url(),
        },
        skip=actor,
    )
    return participation


@transaction.atomic
def participation_withdraw(
    *, actor: AbstractBaseUser, participation: Participation
) -> Participation:
    """The asking side takes back an open request (its own admins) or invitation (the
    proposer's admins) before the other side has answered."""
    participation = _locked(participation)
    require_participation_party(actor, participation)
    problem = participation.problem
    if participation.status == Participation.Status.REQUESTED:
        membership = acting_membership(actor, roles=[Role.ADMIN])
        if membership.institution_id != participation.institution_id:
            raise PermissionDenied(
                _("Only %(name)s's admins withdraw its request.")
                % {"name": participation.institution.name}
            )
        notified = problem.proposer_id
    elif participation.status == Participation.Status.INVITED:
        require_problem_perm(actor, "projects.manage_participants", problem)
        notified = participation.institution_id
    else:
        raise Conflict(
            _("There is no open request or invitation of %(name)s to withdraw.")
            % {"name": participation.institution.name}
        )
    was = participation.status
    participation.status = Participation.Status.WITHDRAWN
    participation.decided_by = actor
    participation.decided_at = timezone.now()
    participation.save()
    problem_sync_permissions(problem)  # a withdrawn invitee no longer sees the problem
    audit_record(
        actor=actor,
        action="participation.withdrawn",
        target=problem,
        subject_institution=participation.institution,
        payload={"institution": participation.institution.slug, "was": was},
    )
    notify(
        institution_ids=[notified],
        roles=[Role.ADMIN],
        template="participation_withdrawn",
        context={
            "problem": problem,
            "participation": participation,
            "was": was,
            "path": problem.get_absolute_url(),
        },
    )
    return participation


@transaction.atomic
def participation_leave(
    *, actor: AbstractBaseUser, problem: Problem, reason: str = ""
) -> Participation:
    """The actor's institution (by its admin) leaves; its data is excluded from later rounds."""
    membership = acting_membership(actor, roles=[Role.ADMIN])
    if membership.institution_id == problem.proposer_id:
        raise ApplicationError(_("The proposing institution cannot leave its own problem."))
    participation = (
        Participation.objects.select_for_update()
        .filter(problem=problem, institution=membership.institution)
        .first()
    )
    if participation is None or participation.status != Participation.Status.ACTIVE:
        raise Conflict(_("Your institution does not take part in this problem."))
    participation.status = Participation.Status.LEFT
    participation.left_at = timezone.now()
    participation.save()
    reason = (reason or "").strip()[:MAX_MESSAGE]
    audit_record(
        actor=actor,
        action="participation.left",
        target=problem,
        subject_institution=membership.institution,
        payload={
            "institution": membership.institution.slug,
            "role": participation.role,
            "reason": reason,
        },
    )
    _after_change(actor, problem)
    notify(
        institution_ids=problem.participations.filter(
            status=Participation.Status.ACTIVE
        ).values_list("institution_id", flat=True),
        roles=[Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER],
        template="participation_left",
        context={
            "problem": problem,
            "participation": participation,
            "reason": reason,
            "path": problem.get_absolute_url(),
        },
    )
    return participation
