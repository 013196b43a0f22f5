"""Read-side queries for problems, datasets and agreements, restricted to what the actor sees."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Exists, F, JSONField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance.models import Institution, Role
from alliance.permissions import membership_of
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    ModelVersion,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    Ratification,
    Round,
    TrainingRun,
)
from projects.permissions import problem_visible_to

User = AbstractBaseUser | AnonymousUser


def problem_list_for(actor: User) -> QuerySet[Problem]:
    """Every problem the actor may see, newest first."""
    return problem_visible_to(actor).order_by("-created_at")


def problem_participations(problem: Problem) -> list[Participation]:
    return list(
        problem.participations.select_related("institution", "requested_by", "decided_by").order_by(
            "status", "role", "institution__name"
        )
    )


def active_contributors(participations: list[Participation]) -> dict[int, Institution]:
    """The institutions that bring data to the problem now (active contributors), by id.

    The one rule for "who contributes" that the pages, the API and the dashboards share; the
    services' database form of it is ``agreements.contributor_ids``.
    """
    return {
        p.institution_id: p.institution
        for p in participations
        if p.status == Participation.Status.ACTIVE and p.role == Participation.Role.CONTRIBUTOR
    }


def approval_state(approval: AgreementApproval | None) -> str:
    """``awaiting`` (no decision), ``approved``, ``declined`` or ``revoked``."""
    if approval is None:
        return "awaiting"
    if approval.revoked_at is not None:
        return "revoked"
    return approval.decision


@dataclass(frozen=True)
class ApprovalRow:
    """One institution's standing on an agreement version."""

    institution: Institution
    state: str  # approval_state()
    approval: AgreementApproval | None
    contributing: bool


def approval_rows(
    version: AgreementVersion, participations: list[Participation]
) -> list[ApprovalRow]:
    """Every active contributor and every institution that ever decided on ``version``, by name.

    A version's approvals are read once (prefetched by ``agreement_get``/``agreement_versions``).
    """
    approvals = {a.institution_id: a for a in version.approvals.all()}
    contributors = active_contributors(participations)
    institutions = dict(contributors)
    for institution_id, approval in approvals.items():
        institutions.setdefault(institution_id, approval.institution)
    return [
        ApprovalRow(
            institution=institution,
            state=approval_state(approvals.get(pk)),
            approval=approvals.get(pk),
            contributing=pk in contributors,
        )
        for pk, institution in sorted(institutions.items(), key=lambda item: item[1].name)
    ]


def awaiting_contributors(rows: list[ApprovalRow]) -> list[Institution]:
    """Active contributors whose approval is not standing (the version waits for them)."""
    return [r.institution for r in rows if r.contributing and r.state != "approved"]


def standing_count(version: AgreementVersion, contributors: dict[int, Institution]) -> int:
    """How many active contributors stand behind ``version`` (approved, not revoked)."""
    return sum(
        1
        for approval in version.approvals.all()
        if approval_state(approval) == "approved" and approval.institution_id in contributors
    )


def problem_revisions(problem: Problem) -> list[ProblemRevision]:
    return list(
        problem.revisions.select_related("created_by").prefetch_related(
            Prefetch(
                "ratifications",
                queryset=Ratification.objects.select_related("institution", "ratified_by"),
            )
        )
    )


def revision_comments(revision: ProblemRevision) -> QuerySet[ProblemComment]:
    return revision.comments.select_related("author", "institution")


def problem_datasets(problem: Problem) -> QuerySet[Dataset]:
    return problem.datasets.select_related("institution", "registered_by").order_by(
        "status", "institution__name", "created_at"
    )


def agreement_versions(problem: Problem) -> list[AgreementVersion]:
    return list(
        problem.agreements.select_related("created_by")
        .prefetch_related(
            Prefetch(
                "approvals",
                queryset=AgreementApproval.objects.select_related(
                    "institution", "decided_by", "revoked_by"
                ),
            )
        )
        .order_by("-number")
    )


def agreement_get(problem: Problem, number: int) -> AgreementVersion | None:
    return (
        problem.agreements.select_related("created_by", "problem", "problem__proposer")
        .prefetch_related(
            Prefetch(
                "approvals",
                queryset=AgreementApproval.objects.select_related(
                    "institution", "decided_by", "revoked_by"
                ),
            )
        )
        .filter(number=number)
        .first()
    )


@dataclass(frozen=True)
class InboxItem:
    """One thing waiting for the person: what to do, on which problem, and where."""

    kind: str
    text: str
    url: str
    problem: Problem
    since: datetime


def inbox_for(actor: User) -> list[InboxItem]:
    """Pending actions for the actor, derived from the current state (never stale).

    - admins and researchers of contributors and validators: ratify the current revision;
    - data stewards of contributors: decide on a pending agreement version, or approve the
      effective one they have not approved; register a dataset for a ratified problem;
    - admins of the proposer: decide on requests to join;
    - admins of an invited institution: answer the invitation.
    """
    own = membership_of(actor)
    if own is None or not actor.is_active or own.institution.status != "admitted":
        return []
    institution_id, role = own.institution_id, own.role
    items: list[InboxItem] = []
    mine = Participation.objects.filter(institution_id=institution_id).select_related("problem")
    active = mine.filter(status=Participation.Status.ACTIVE)

    if role in (Role.ADMIN, Role.RESEARCHER):
        # One query for what an admin or researcher answers: revisions to ratify, and for
        # admins invitations to their institution and requests to join their problems.
        ratified = Ratification.objects.filter(
            revision__problem=OuterRef("problem"),
            revision__number=OuterRef("problem__current_revision"),
            institution_id=institution_id,
        )
        to_ratify = Q(
            institution_id=institution_id,
            status=Participation.Status.ACTIVE,
            role__in=[Participation.Role.CONTRIBUTOR, Participation.Role.VALIDATOR],
            ratified=False,
        )
        wanted = to_ratify
        if role == Role.ADMIN:
            wanted |= Q(institution_id=institution_id, status=Participation.Status.INVITED)
            wanted |= Q(problem__proposer_id=institution_id, status=Participation.Status.REQUESTED)
        found: dict[str, list[InboxItem]] = {"ratify": [], "invitation": [], "request": []}
        rows = (
            Participation.objects.annotate(ratified=Exists(ratified))
            .filter(wanted)
            .select_related("problem", "institution")
        )
        for p in rows:
            problem = p.problem
            if (
                p.institution_id == institution_id
                and p.status == Participation.Status.ACTIVE
                and not p.ratified
            ):
                found["ratify"].append(
                    InboxItem(
                        kind="ratify",
                        text=_("Ratify revision %(n)s of %(title)s")
                        % {"n": problem.current_revision, "title": problem.title},
                        url=reverse(
                            "problem-revision", args=[problem.slug, problem.current_revision]
                        ),
                        problem=problem,
                        since=problem.updated_at,
                    )
                )
            elif p.status == Participation.Status.INVITED:
                found["invitation"].append(
                    InboxItem(
                        kind="invitation",
                        text=_("Answer the invitation to join %(title)s as %(role)s")
                        % {"title": problem.title, "role": p.get_role_display().lower()},
                        url=problem.get_absolute_url() + "#participants",
                        problem=problem,
                        since=p.created_at,
                    )
                )
            elif p.status == Participation.Status.REQUESTED:
                found["request"].append(
                    InboxItem(
                        kind="request",
                        text=_("%(name)s asks to join %(title)s as %(role)s")
                        % {
                            "name": p.institution.name,
                            "title": problem.title,
                            "role": p.get_role_display().lower(),
                        },
                        url=problem.get_absolute_url() + "#participants",
                        problem=problem,
                        since=p.created_at,
                    )
                )
        items += found["ratify"] + found["invitation"] + found["request"]
    if role == Role.DATA_STEWARD:
        contributing = active.filter(role=Participation.Role.CONTRIBUTOR).values("problem_id")
        # A pending version not decided yet, or an effective one the institution never
        # decided on (it joined after the version took effect); a revocation is a decision.
        decided = AgreementApproval.objects.filter(
            version=OuterRef("pk"), institution_id=institution_id
        )
        versions = (
            AgreementVersion.objects.filter(
                problem_id__in=contributing,
                status__in=[AgreementVersion.Status.PENDING, AgreementVersion.Status.EFFECTIVE],
            )
            .exclude(Exists(decided))
            .select_related("problem")
        )
        for version in versions:
            items.append(
                InboxItem(
                    kind="agreement",
                    text=_("Approve agreement version %(n)s of %(title)s")
                    % {"n": version.number, "title": version.problem.title},
                    url=version.get_absolute_url(),
                    problem=version.problem,
                    since=version.created_at,
                )
            )
        has_dataset = Dataset.objects.filter(
            problem=OuterRef("problem"),
            institution_id=institution_id,
            status=Dataset.Status.ACTIVE,
            revision=OuterRef("problem__current_revision"),
        )
        for p in (
            active.filter(role=Participation.Role.CONTRIBUTOR)
            .filter(problem__ratified_revision=F("problem__current_revision"))
            .exclude(Exists(has_dataset))
        ):
            items.append(
                InboxItem(
                    kind="dataset",
                    text=_("Register your dataset for %(title)s") % {"title": p.problem.title},
                    url=reverse("dataset-register", args=[p.problem.slug]),
                    problem=p.problem,
                    since=p.problem.updated_at,
                )
            )
    items.sort(key=lambda item: item.since, reverse=True)
    return items


# --- Runs ----------------------------------------------------------------------------------


def problem_run(problem: Problem, number: int) -> TrainingRun:
    """Run ``number`` of a problem the caller already may see, or 404."""
    run = (
        problem.runs.select_related("agreement", "launched_by", "institution", "cancelled_by")
        .filter(number=number)
        .first()
    )
    if run is None:
        raise Http404(_("This problem has no run %(n)s.") % {"n": number})
    run.problem = problem
    return run


def runs_with_progress(problem: Problem) -> QuerySet[TrainingRun]:
    """The problem's runs, newest first, each with ``rounds_done`` and the ``last_metrics`` of
    its latest scored global model (its final model's own figures once a finished run's final
    model is scored), in one query whatever the number of rounds."""
    last_metrics = (
        ModelVersion.objects.filter(run=OuterRef("pk"))
        .exclude(metrics={})
        .order_by("-round_number")
        .values("metrics")[:1]
    )
    return (
        problem.runs.select_related("launched_by", "institution", "agreement")
        .annotate(
            rounds_done=Count("round_set", filter=Q(round_set__status=Round.Status.SUCCEEDED)),
            last_metrics=Subquery(last_metrics, output_field=JSONField()),
        )
        .order_by("-number")
    )
