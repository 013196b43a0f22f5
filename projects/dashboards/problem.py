"""The problem dashboard: where a problem stands and who does what, on one page.

The problem page already reads its participants, revisions (with their ratifications),
datasets and agreement versions (with their approvals); these selectors summarise those lists
without asking again, and add two queries for the runs (the latest few with their progress,
and the counts by status), so the page's query count does not grow with rounds or runs.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution
from projects.dashboards.run import main_metric
from projects.models import (
    AgreementApproval,
    AgreementVersion,
    Dataset,
    ModelVersion,
    Participation,
    Problem,
    ProblemRevision,
    TrainingRun,
)
from projects.selectors import active_contributors, approval_state, runs_with_progress

LATEST_RUNS = 5
GRID_VERSIONS = 6


@dataclass(frozen=True)
class Figure:
    """One tile of a ``.stats`` list."""

    value: str
    label: str


@dataclass(frozen=True)
class NextStep:
    text: str
    url: str = ""
    link: str = ""


@dataclass(frozen=True)
class RevisionStatus:
    revision: ProblemRevision
    state: str  # "ratified", "awaiting" (the current one, not yet) or "superseded"
    ratified_by: list[str]
    waiting_for: list[str]  # the current revision only: who has still to ratify


@dataclass(frozen=True)
class GridCell:
    state: str  # "approved", "declined", "revoked", "awaiting" or "" (not asked)
    symbol: str
    label: str
    detail: str


@dataclass(frozen=True)
class GridRow:
    institution: Institution
    contributing: bool
    cells: list[GridCell]


@dataclass(frozen=True)
class ApprovalGrid:
    """Institutions by agreement version, newest version first."""

    versions: list[AgreementVersion]
    rows: list[GridRow]
    hidden: int  # older versions left out of the grid


@dataclass(frozen=True)
class RunLine:
    run: TrainingRun
    metric: tuple[str, float] | None
    final: bool


@dataclass(frozen=True)
class RunSummary:
    latest: list[RunLine]
    total: int
    figures: list[Figure]


@dataclass(frozen=True)
class ProblemDashboard:
    next_step: NextStep | None
    figures: list[Figure]
    roles: list[Figure]
    revisions: list[RevisionStatus]
    grid: ApprovalGrid
    runs: RunSummary
    data_ready: bool  # runs may start (data ready or any later stage)


def role_counts(participations: list[Participation]) -> list[Figure]:
    """How many institutions take part in each role (active participations only)."""
    counts = {role: 0 for role in Participation.Role.values}
    for p in participations:
        if p.status == Participation.Status.ACTIVE:
            counts[p.role] += 1
    labels = {
        Participation.Role.CONTRIBUTOR: _("contributors (bring data)"),
        Participation.Role.VALIDATOR: _("validators (evaluate)"),
        Participation.Role.OBSERVER: _("observers"),
    }
    return [Figure(str(counts[role]), str(labels[role])) for role in Participation.Role.values]


def revision_statuses(
    problem: Problem, revisions: list[ProblemRevision], participations: list[Participation]
) -> list[RevisionStatus]:
    """Every revision, newest first, with who ratified it (from the prefetched ratifications)."""
    required = {p.institution_id: p.institution.name for p in participations if p.must_ratify}
    rows = []
    for revision in sorted(revisions, key=lambda r: -r.number):
        ratifications = list(revision.ratifications.all())
        done = {r.institution_id for r in ratifications}
        if revision.number == problem.ratified_revision:
            state = "ratified"
        elif revision.number == problem.current_revision:
            state = "awaiting"
        else:
            state = "superseded"
        rows.append(
            RevisionStatus(
                revision=revision,
                state=state,
                ratified_by=sorted(r.institution.name for r in ratifications),
                waiting_for=sorted(name for pk, name in required.items() if pk not in done)
                if revision.number == problem.current_revision
                else [],
            )
        )
    return rows


def _day(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d")


def _cell(
    version: AgreementVersion, approval: AgreementApproval | None, contributing: bool
) -> GridCell:
    state = approval_state(approval)
    if approval is None:
        if contributing and version.status in (
            AgreementVersion.Status.PENDING,
            AgreementVersion.Status.EFFECTIVE,
        ):
            return GridCell("awaiting", "…", _("Awaiting"), _("No decision yet"))
        return GridCell("", "—", _("Not asked"), _("No decision on this version"))
    when = _day(approval.decided_at)
    if state == "revoked":
        return GridCell(
            "revoked",
            "↺",
            _("Revoked"),
            _("Revoked on %(when)s. %(reason)s")
            % {"when": _day(approval.revoked_at), "reason": approval.revoke_reason},
        )
    if state == AgreementApproval.Decision.DECLINED:
        return GridCell(
            "declined",
            "✗",
            _("Declined"),
            _("Declined on %(when)s. %(reason)s") % {"when": when, "reason": approval.reason},
        )
    return GridCell("approved", "✓", _("Approved"), _("Approved on %(when)s") % {"when": when})


def approval_grid(
    versions: list[AgreementVersion], participations: list[Participation]
) -> ApprovalGrid:
    """Contributors and every institution that decided, by the latest agreement versions."""
    shown = sorted(versions, key=lambda v: -v.number)[:GRID_VERSIONS]
    contributors = active_contributors(participations)
    decisions: dict[tuple[int, int], AgreementApproval] = {}
    institutions: dict[int, Institution] = dict(contributors)
    for version in shown:
        for approval in version.approvals.all():
            decisions[(version.pk, approval.institution_id)] = approval
            institutions.setdefault(approval.institution_id, approval.institution)
    rows = [
        GridRow(
            institution=institution,
            contributing=pk in contributors,
            cells=[
                _cell(version, decisions.get((version.pk, pk)), pk in contributors)
                for version in shown
            ],
        )
        for pk, institution in sorted(institutions.items(), key=lambda item: item[1].name)
    ]
    return ApprovalGrid(versions=shown, rows=rows, hidden=max(len(versions) - len(shown), 0))


def run_summary(problem: Problem) -> RunSummary:
    """The latest runs with their progress and metric, and the runs counted by status."""
    latest = [
        RunLine(
            run=run,
            metric=main_metric(run, run.last_metrics),
            final=run.status == TrainingRun.Status.SUCCEEDED,
        )
        for run in runs_with_progress(problem)[:LATEST_RUNS]
    ]
    for line in latest:
        line.run.problem = problem
    counts = problem.runs.aggregate(
        total=Count("pk"),
        **{
            status: Count("pk", filter=Q(status=status))
            for status in (
                TrainingRun.Status.SUCCEEDED,
                TrainingRun.Status.RUNNING,
                TrainingRun.Status.FAILED,
            )
        },
    )
    figures = [
        Figure(str(counts["total"]), _("runs launched")),
        Figure(str(counts[TrainingRun.Status.SUCCEEDED]), _("succeeded")),
        Figure(str(counts[TrainingRun.Status.RUNNING]), _("training now")),
        Figure(str(counts[TrainingRun.Status.FAILED]), _("failed")),
    ]
    return RunSummary(latest=latest, total=counts["total"], figures=figures)


def next_step(
    problem: Problem,
    revisions: list[RevisionStatus],
    datasets: list[Dataset],
    contributors: int,
    effective: AgreementVersion | None,
) -> NextStep | None:
    """What the problem waits for, in one sentence and a link."""
    stage = Problem.Stage
    slug = problem.slug
    if problem.stage == stage.PROPOSED or not problem.is_ratified:
        current = next((r for r in revisions if r.state == "awaiting"), None)
        waiting = ", ".join(current.waiting_for) if current else ""
        if contributors == 0:
            return NextStep(
                _("Next: invite contributing institutions; each will ratify the definition."),
                "#participants",
                _("Participants"),
            )
        return NextStep(
            _(
                "Next: every contributor and validator ratifies revision %(n)s. "
                "Waiting for: %(who)s."
            )
            % {"n": problem.current_revision, "who": waiting or "—"},
            "#ratification",
            _("Ratification"),
        )
    if problem.stage == stage.RATIFIED:
        registered = {
            d.institution_id
            for d in datasets
            if d.status == Dataset.Status.ACTIVE and d.revision == problem.current_revision
        }
        if len(registered) < contributors:
            return NextStep(
                _(
                    "Next: the data stewards of %(n)s contributing institution(s) register "
                    "their datasets."
                )
                % {"n": contributors - len(registered)},
                "#datasets",
                _("Datasets"),
            )
        if effective is None:
            return NextStep(
                _("Next: every contributor's data steward approves the data-use agreement."),
                reverse("agreement-list", args=[slug]),
                _("The agreement"),
            )
        return None
    if problem.stage == stage.DATA_READY:
        return NextStep(
            _("Next: a researcher of a contributing institution launches a training run."),
            reverse("run-list", args=[slug]),
            _("Training runs"),
        )
    if problem.stage == stage.TRAINING:
        return NextStep(
            _(
                "Next: a run's final model is scored by the validators on their held-out data; "
                "one that meets the ratified bar is certified."
            ),
            reverse("run-list", args=[slug]),
            _("Training runs"),
        )
    if problem.stage in (stage.CERTIFIED, stage.RELEASED):
        latest = (
            ModelVersion.objects.filter(run__problem=problem, certification__certified=True)
            .select_related("run")
            .order_by("-certification__decided_at")
            .first()
        )
        link = (
            reverse("model-detail", args=[slug, latest.run.number, latest.round_number])
            if latest is not None
            else reverse("run-list", args=[slug])
        )
        if problem.stage == stage.CERTIFIED:
            return NextStep(
                _("Next: the proposer's admin releases a certified model, with its model card."),
                link,
                _("The certified model"),
            )
        return NextStep(
            _("Released: the model and its card are out; later runs may improve on it."),
            link,
            _("The latest certified model"),
        )
    return None


def problem_dashboard(
    problem: Problem,
    *,
    participations: list[Participation],
    revisions: list[ProblemRevision],
    versions: list[AgreementVersion],
    datasets: list[Dataset],
) -> ProblemDashboard:
    """The problem page's summaries from the lists the page has read, plus its runs."""
    contributors = active_contributors(participations)
    statuses = revision_statuses(problem, revisions, participations)
    effective = next((v for v in versions if v.status == AgreementVersion.Status.EFFECTIVE), None)
    active = [d for d in datasets if d.status == Dataset.Status.ACTIVE]
    runs = run_summary(problem)
    figures = [
        Figure(str(len(contributors)), _("contributing institutions")),
        Figure(str(len(active)), _("datasets registered")),
        Figure(str(sum(d.row_count for d in active)), _("rows at the sites (never here)")),
        Figure(
            _("version %(n)s") % {"n": effective.number} if effective else "—",
            _("agreement in effect"),
        ),
        Figure(str(runs.total), _("training runs")),
    ]
    return ProblemDashboard(
        next_step=next_step(problem, statuses, datasets, len(contributors), effective),
        figures=figures,
        roles=role_counts(participations),
        revisions=statuses,
        grid=approval_grid(versions, participations),
        runs=runs,
        data_ready=problem.stage_index >= Problem.Stage.values.index(Problem.Stage.DATA_READY),
    )
