"""Who may see and act on a problem: object permissions granted to institution-role groups.

A problem's object permissions are derived from its participations and nothing else;
``problem_sync_permissions`` recomputes them and is called by every service that changes a
participation. They are granted to the ``institution:<id>:<role>`` groups that
``alliance.permissions`` keeps in step with people's roles:

- ``view_problem``: everyone at the proposer and at every invited or participating institution
  (a listed problem is visible to every member anyway; an invitation-only one to nobody else);
- ``change_problem``: the proposer's admins and researchers (edit, revise, draft agreements);
- ``manage_participants``: the proposer's admins;
- ``ratify_problem``: admins and researchers of active contributors and validators;
- ``comment_problem``: admins, stewards and researchers of active participants;
- ``register_dataset`` and ``approve_agreement``: data stewards of active contributors.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.expressions import ArraySubquery
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import (
    CharField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Concat
from django.http import Http404
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from guardian.core import ObjectPermissionChecker
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user

from alliance.models import Role
from alliance.permissions import (
    acting_membership,
    current_membership,
    institution_group,
    institution_group_name,
)
from projects.models import Dataset, Participation, Problem, TrainingRun

User = AbstractBaseUser | AnonymousUser

_ALL_ROLES = tuple(Role.values)
_ACTING_ROLES = (Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER)

PERMISSION_DENIALS = {
    "projects.change_problem": gettext_lazy(
        "Only the proposing institution's admins and researchers can do this."
    ),
    "projects.manage_participants": gettext_lazy(
        "Only the proposing institution's admins manage participants."
    ),
    "projects.ratify_problem": gettext_lazy(
        "Only admins and researchers of contributing or validating institutions ratify."
    ),
    "projects.comment_problem": gettext_lazy("Only people of participating institutions comment."),
    "projects.register_dataset": gettext_lazy(
        "Only data stewards of contributing institutions register datasets."
    ),
    "projects.approve_agreement": gettext_lazy(
        "Only data stewards of contributing institutions decide on the agreement."
    ),
}


def _desired_grants(problem: Problem) -> set[tuple[str, str]]:
    grants: set[tuple[str, str]] = set()

    def grant(codename: str, institution_id: int, roles: tuple[str, ...]) -> None:
        for role in roles:
            grants.add((codename, institution_group_name(institution_id, role)))

    grant("view_problem", problem.proposer_id, _ALL_ROLES)
    grant("change_problem", problem.proposer_id, (Role.ADMIN, Role.RESEARCHER))
    grant("manage_participants", problem.proposer_id, (Role.ADMIN,))
    for p in problem.participations.filter(
        status__in=[Participation.Status.ACTIVE, Participation.Status.INVITED]
    ):
        grant("view_problem", p.institution_id, _ALL_ROLES)
        if p.status != Participation.Status.ACTIVE:
            continue
        grant("comment_problem", p.institution_id, _ACTING_ROLES)
        if p.role in (Participation.Role.CONTRIBUTOR, Participation.Role.VALIDATOR):
            grant("ratify_problem", p.institution_id, (Role.ADMIN, Role.RESEARCHER))
        if p.role == Participation.Role.CONTRIBUTOR:
            grant("register_dataset", p.institution_id, (Role.DATA_STEWARD,))
            grant("approve_agreement", p.institution_id, (Role.DATA_STEWARD,))
    return grants


def problem_sync_permissions(problem: Problem) -> None:
    """Make the problem's group object permissions exactly what its participations imply."""
    content_type = ContentType.objects.get_for_model(Problem)
    existing = GroupObjectPermission.objects.filter(
        content_type=content_type, object_pk=str(problem.pk)
    ).select_related("permission", "group")
    desired = _desired_grants(problem)
    have: set[tuple[str, str]] = set()
    for row in existing:
        key = (row.permission.codename, row.group.name)
        if key in desired:
            have.add(key)
        else:
            row.delete()
    missing = desired - have
    if not missing:
        return
    permissions = {
        p.codename: p
        for p in content_type.permission_set.filter(codename__in={c for c, _g in missing})
    }
    for codename, group_name in sorted(missing):
        _prefix, institution_id, role = group_name.split(":")
        group: Group = institution_group(int(institution_id), role)
        GroupObjectPermission.objects.create(
            group=group,
            permission=permissions[codename],
            content_type=content_type,
            object_pk=str(problem.pk),
        )


def is_staff(actor: User | None) -> bool:
    return bool(actor is not None and actor.is_authenticated and actor.is_staff)


def with_own_participation(problems: QuerySet[Problem], actor: User) -> QuerySet[Problem]:
    """``problems``, each read with the actor's institution's participation in it
    (``own_participation``: "status:role", or None), for the run checks below."""
    own = Participation.objects.filter(
        problem=OuterRef("pk"), institution__memberships__user_id=actor.pk
    ).values(pair=Concat("status", Value(":"), "role"))
    return problems.annotate(own_participation=Subquery(own[:1]))


def problem_perms(actor: User, problem: Problem) -> set[str]:
    """The actor's object permissions on ``problem`` (codenames), as guardian's checker says:
    their own grants and their groups', in one query (the checker takes two), once per request
    and problem object."""
    cached = getattr(problem, "_actor_perms", None)
    if cached is not None and cached[0] == actor.pk:
        return cached[1]
    if not actor.is_active:
        perms: set[str] = set()  # as guardian's backend answers an inactive person
    elif actor.is_superuser:
        perms = set(ObjectPermissionChecker(actor).get_perms(problem))
    else:
        granted = {
            "content_type": ContentType.objects.get_for_model(Problem),
            "object_pk": str(problem.pk),
        }
        by_group = GroupObjectPermission.objects.filter(group__user=actor, **granted)
        by_user = UserObjectPermission.objects.filter(user=actor, **granted)
        perms = set(
            by_group.values_list("permission__codename", flat=True).union(
                by_user.values_list("permission__codename", flat=True)
            )
        )
    problem._actor_perms = (actor.pk, perms)  # type: ignore[attr-defined]
    return perms


def _own_participation(problem: Problem, institution_id: int) -> tuple[str, str] | None:
    """(status, role) of the institution's participation, as read with the problem if it was."""
    if hasattr(problem, "own_participation"):
        pair = problem.own_participation
        return tuple(pair.split(":", 1)) if pair else None  # type: ignore[return-value]
    row = (
        problem.participations.filter(institution_id=institution_id)
        .values_list("status", "role")
        .first()
    )
    return tuple(row) if row else None  # type: ignore[return-value]


def _perms_with_problem(actor: User) -> bool:
    """Whether ``_with_own_perms`` reads the actor's permissions with the problem."""
    return connection.vendor == "postgresql" and actor.is_active and not actor.is_superuser


def _with_own_perms(problems: QuerySet[Problem], actor: User) -> QuerySet[Problem]:
    """``problems``, each read with the actor's object permissions on it (``group_perms`` and
    ``user_perms``: codenames), as ``problem_perms`` reads them, so that a member's page does
    not ask for them in a query of its own. PostgreSQL (arrays); elsewhere unchanged, and
    ``problem_perms`` asks. Only for an active person who is not a superuser: the others'
    permissions do not come from these grants (``problem_perms``)."""
    if not _perms_with_problem(actor):
        return problems
    granted = {
        "content_type": ContentType.objects.get_for_model(Problem),
        "object_pk": Cast(OuterRef("pk"), CharField()),
    }
    by_group = GroupObjectPermission.objects.filter(group__user=actor, **granted)
    by_user = UserObjectPermission.objects.filter(user=actor, **granted)
    return problems.annotate(
        group_perms=ArraySubquery(by_group.values("permission__codename")),
        user_perms=ArraySubquery(by_user.values("permission__codename")),
    )


def problem_visible_to(actor: User | None) -> QuerySet[Problem]:
    """Problems the actor may see: staff all; members the listed ones and their own."""
    problems = Problem.objects.select_related("proposer")
    if is_staff(actor):
        return problems
    if actor is None or not actor.is_authenticated:
        return problems.none()
    invited = get_objects_for_user(
        actor,
        "projects.view_problem",
        klass=Problem,
        with_superuser=False,
        accept_global_perms=False,
    ).values("pk")
    return problems.filter(Q(visibility=Problem.Visibility.LISTED) | Q(pk__in=invited))


def access_problem(actor: User | None, slug: str, *, perm: str | None = None) -> Problem:
    """The problem ``actor`` may see (and, with ``perm``, act on) by slug.

    Missing and invisible problems answer the same 404, so nobody can probe for the names of
    invitation-only problems; a visible problem without ``perm`` is a 403. Acting also needs an
    active membership of an admitted institution (staff read everything but act for nobody).
    """
    member = actor is not None and actor.is_authenticated and not actor.is_staff
    if member and _perms_with_problem(actor):  # type: ignore[arg-type]
        # The problem by slug, read with the member's part in it and their permissions on it;
        # visible when listed or when they may view it (problem_visible_to's rule, decided
        # here on the one row rather than by a subquery over every problem they may view).
        problems = Problem.objects.select_related("proposer").filter(slug=slug)
        problem = _with_own_perms(with_own_participation(problems, actor), actor).first()  # type: ignore[arg-type]
        if problem is not None:
            perms = set(problem.group_perms) | set(problem.user_perms)  # type: ignore[attr-defined]
            # What problem_perms would otherwise ask in a query of its own.
            problem._actor_perms = (actor.pk, perms)  # type: ignore[attr-defined, union-attr]
            if problem.visibility != Problem.Visibility.LISTED and "view_problem" not in perms:
                problem = None
    else:
        problems = problem_visible_to(actor).filter(slug=slug)
        if member:
            problems = with_own_participation(problems, actor)  # type: ignore[arg-type]
        problem = problems.first()
    if problem is None:
        raise Http404(_("No such problem."))
    if perm is not None:
        acting_membership(actor)
        if perm.split(".")[-1] not in problem_perms(actor, problem):  # type: ignore[arg-type]
            raise PermissionDenied(
                str(PERMISSION_DENIALS.get(perm, _("You may not do this on this problem.")))
            )
    return problem


# --- Training runs ------------------------------------------------------------------------

LAUNCH_ROLES = (Role.RESEARCHER, Role.ADMIN)


def can_launch(actor: User | None, problem: Problem) -> bool:
    """Researchers (and admins) of an institution that actively contributes to the problem."""
    membership = current_membership(actor, roles=LAUNCH_ROLES)
    if membership is None:
        return False
    own = _own_participation(problem, membership.institution_id)
    return own == (Participation.Status.ACTIVE, Participation.Role.CONTRIBUTOR)


def can_cancel(actor: User | None, run: TrainingRun) -> bool:
    """Staff, and the researchers and admins of the institution that launched the run."""
    if actor is None or not actor.is_authenticated:
        return False
    if actor.is_staff:
        return True
    membership = current_membership(actor, roles=LAUNCH_ROLES)
    return membership is not None and membership.institution_id == run.institution_id


def may_download(actor: User | None, run: TrainingRun) -> bool:
    """Whether the run's agreement lets this person download its models."""
    scope = run.agreement.download_scope
    if scope == "public":
        return True
    if actor is None or not actor.is_authenticated:
        return False
    if actor.is_staff:
        return True
    membership = current_membership(actor)
    if membership is None:
        return False
    if scope == "members":
        return True  # an acting membership is one of an admitted institution
    own = _own_participation(run.problem, membership.institution_id)
    return own is not None and own[0] == Participation.Status.ACTIVE


def download_refusal(run: TrainingRun) -> str:
    """Why the run's agreement keeps its models from this person, in the agreement's terms."""
    scope = run.agreement.download_scope
    if scope == "members":
        return _(
            "Agreement version %(n)s lets only people of admitted alliance members download "
            "this run's models."
        ) % {"n": run.agreement.number}
    return _(
        "Agreement version %(n)s lets only people of the institutions taking part in this "
        "problem download this run's models."
    ) % {"n": run.agreement.number}


def require_dataset_steward(actor: User | None, dataset: Dataset) -> None:
    """PermissionDenied unless the actor is a data steward of the dataset's own institution."""
    membership = acting_membership(actor, roles=[Role.DATA_STEWARD])
    if membership.institution_id != dataset.institution_id:
        raise PermissionDenied(_("Only the dataset's own data stewards withdraw it."))


def require_participation_party(actor: User | None, participation: Participation) -> None:
    """The proposer's admins, or the participating institution's own admins: nobody else may
    act on a participation at all. Checked before its state, so that a refusal is the same 403
    whatever that state is, and a conflict is only ever told to someone who may act."""
    membership = acting_membership(actor)
    if actor.has_perm("projects.manage_participants", participation.problem):  # type: ignore[union-attr]
        return
    if membership.role == Role.ADMIN and membership.institution_id == participation.institution_id:
        return
    raise PermissionDenied(
        _("Only the proposing institution's admins and %(name)s's admins act on its participation.")
        % {"name": participation.institution.name}
    )
