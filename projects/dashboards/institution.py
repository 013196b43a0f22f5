"""The institution dashboard: our problems, our datasets and every run that used each of them.

Everything here is scoped to one institution, the caller's own, and computed in a fixed number of
queries: a dataset's part in a run is aggregated from its ``SiteRound`` rows in the database (one
row per dataset and run), and only the latest few runs per dataset are kept, ranked by a window
function over those grouped rows, so a dataset used in hundreds of runs costs the same number of
queries, and returns the same number of rows, as one used once.
"""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Exists, F, Func, OuterRef, QuerySet, Subquery, Window
from django.db.models.functions import RowNumber
from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext as _

from alliance.models import Institution, Membership
from alliance.permissions import membership_of
from alliance.selectors import member_list_for
from projects.models import Dataset, Participation, Problem, Round, SiteRound, TrainingRun

User = AbstractBaseUser | AnonymousUser

DATASETS_PER_PAGE = 5
RUNS_PER_DATASET = 5
RUNS_PER_PAGE = 25
MISSES_SHOWN = 10
PROBLEMS_SHOWN = 15
PEOPLE_PER_PAGE = 50

_STAGES = list(Problem.Stage)


@dataclass(frozen=True)
class InstitutionFigures:
    """The headline numbers of the dashboard."""

    problems: int
    datasets: int
    runs: int
    people: int
    invited: int


@dataclass(frozen=True)
class RoundMiss:
    """A round the dataset was asked for but did not count in: dropped or rejected, and why."""

    number: int
    status: str
    label: str
    reason: str


@dataclass(frozen=True)
class DatasetRun:
    """One run as one dataset took part in it: when, which agreement, which rounds, outcome."""

    run_id: int
    number: int
    problem_slug: str
    problem_title: str
    status: str
    status_label: str
    launched_at: datetime
    finished_at: datetime | None
    agreement_number: int
    first_round: int
    last_round: int
    asked: int
    contributed: int
    dropped: int
    rejected: int
    misses: tuple[RoundMiss, ...]

    @property
    def url(self) -> str:
        return reverse("run", args=[self.problem_slug, self.number])

    @property
    def agreement_url(self) -> str:
        return reverse("agreement-detail", args=[self.problem_slug, self.agreement_number])

    @property
    def misses_not_shown(self) -> int:
        return self.dropped + self.rejected - len(self.misses)

    @property
    def outcome(self) -> str:
        """good / warn / bad: how the run ended, for a badge that also carries the text."""
        if self.status == TrainingRun.Status.SUCCEEDED:
            return "ok"
        if self.status == TrainingRun.Status.FAILED:
            return "bad"
        return "warn"


@dataclass(frozen=True)
class DatasetUsage:
    """A dataset of ours and the latest runs that used it; ``older`` says more runs exist."""

    dataset: Dataset
    runs: tuple[DatasetRun, ...]
    older: int | None

    @property
    def runs_url(self) -> str:
        return reverse("my-institution-dataset-runs", args=[self.dataset.pk])


@dataclass(frozen=True)
class ProblemStake:
    """A problem the institution takes part in, with its role, its status and the stage."""

    participation: Participation
    step: int
    steps: int
    has_dataset: bool

    @property
    def problem(self) -> Problem:
        return self.participation.problem

    @property
    def may_register(self) -> bool:
        return (
            self.participation.status == Participation.Status.ACTIVE
            and self.participation.role == Participation.Role.CONTRIBUTOR
            and self.problem.is_ratified
            and not self.has_dataset
        )


def _count(rows: QuerySet) -> Subquery:
    """How many ``rows`` there are, as a scalar subquery (COUNT without GROUP BY)."""
    return Subquery(rows.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n"))


def institution_figures(institution_id: int) -> InstitutionFigures:
    """Counts of active problems, registered datasets, runs that used them, and people.

    One query: each count a subquery of a single row read for the institution.
    """
    # One probe per run of a problem the institution is or was part of, stopping at the first
    # site round found: far cheaper than reading every site round of a busy institution.
    first_use = (
        SiteRound.objects.filter(round__run=OuterRef("pk"), institution_id=OuterRef(OuterRef("pk")))
        .order_by()
        .values("pk")[:1]
    )
    runs = (
        TrainingRun.objects.filter(problem__participations__institution_id=OuterRef("pk"))
        .annotate(first_use=Subquery(first_use))
        .filter(first_use__isnull=False)
    )
    people = Membership.objects.filter(institution_id=OuterRef("pk"), user__is_active=True)
    counts = (
        Institution.objects.filter(pk=institution_id)
        .annotate(
            n_problems=_count(
                Participation.objects.filter(
                    institution_id=OuterRef("pk"), status=Participation.Status.ACTIVE
                )
            ),
            n_datasets=_count(
                Dataset.objects.filter(institution_id=OuterRef("pk"), status=Dataset.Status.ACTIVE)
            ),
            n_runs=_count(runs),
            n_people=_count(people.filter(joined_at__isnull=False)),
            n_invited=_count(people.filter(joined_at__isnull=True)),
        )
        .values_list("n_problems", "n_datasets", "n_runs", "n_people", "n_invited")
        .first()
    ) or (0, 0, 0, 0, 0)
    return InstitutionFigures(*counts)


def institution_problems(institution_id: int, *, limit: int = PROBLEMS_SHOWN) -> list[ProblemStake]:
    """The problems the institution takes part in or asked or was invited to join, most recently
    changed first; declined and withdrawn ones are history, and left out."""
    registered = Dataset.objects.filter(
        problem=OuterRef("problem"),
        institution_id=institution_id,
        status=Dataset.Status.ACTIVE,
        revision=OuterRef("problem__current_revision"),
    )
    participations = (
        Participation.objects.filter(institution_id=institution_id)
        .exclude(status__in=[Participation.Status.DECLINED, Participation.Status.WITHDRAWN])
        .select_related("problem")
        .annotate(has_dataset=Exists(registered))
        .order_by("-problem__updated_at", "-pk")[:limit]
    )
    return [
        ProblemStake(
            participation=p,
            step=p.problem.stage_index + 1,
            steps=len(_STAGES),
            has_dataset=p.has_dataset,
        )
        for p in participations
    ]


def institution_dataset_page(
    institution_id: int, *, before: int | None = None, size: int = DATASETS_PER_PAGE
) -> tuple[list[Dataset], int | None]:
    """One page of the institution's datasets, newest first, and the cursor of the next page."""
    datasets = Dataset.objects.filter(institution_id=institution_id).select_related("problem")
    if before is not None:
        datasets = datasets.filter(pk__lt=before)
    page = list(datasets.order_by("-pk")[: size + 1])
    older = page[size - 1].pk if len(page) > size else None
    return page[:size], older


def access_own_dataset(actor: User, dataset_id: int) -> Dataset:
    """A dataset of the actor's own institution; any other answers 404, as if missing."""
    own = membership_of(actor)
    dataset = (
        Dataset.objects.select_related("problem", "institution")
        .filter(pk=dataset_id, institution_id=own.institution_id if own else None)
        .first()
    )
    if dataset is None:
        raise Http404(_("Your institution has no such dataset."))
    return dataset


def dataset_runs(
    datasets: list[Dataset], *, per_dataset: int = RUNS_PER_DATASET, before: int | None = None
) -> list[DatasetUsage]:
    """For each dataset, the latest ``per_dataset`` runs that asked it for an update (older than
    run id ``before`` if given), with what happened to it in each: at most three queries.

    A run counts for a dataset when at least one of its rounds was dispatched to it; the rounds
    say which it contributed to, and which it was dropped from or rejected in.
    """
    if not datasets:
        return []
    ids = [d.pk for d in datasets]
    per: dict[int, list[dict]] = {pk: [] for pk in ids}
    for row in _latest_runs_per_dataset(ids, per_dataset + 1, before):
        per[row["dataset_id"]].append(row)
    for found in per.values():
        found.sort(key=lambda row: row["run_id"], reverse=True)
    # One row more than shown was read, to tell whether older runs exist.
    shown_rows = [row for found in per.values() for row in found[:per_dataset]]
    runs = {
        run.pk: run
        for run in TrainingRun.objects.filter(pk__in={row["run_id"] for row in shown_rows})
        .select_related("problem", "agreement")
        .only(
            "number",
            "status",
            "created_at",
            "finished_at",
            "problem__slug",
            "problem__title",
            "agreement__number",
        )
    }
    misses = _misses(
        {
            (row["dataset_id"], row["run_id"])
            for row in shown_rows
            if row["dropped"] or row["rejected"]
        }
    )
    usages = []
    for dataset in datasets:
        found = per[dataset.pk]
        shown = tuple(
            _dataset_run(row, runs[row["run_id"]], misses.get((dataset.pk, row["run_id"]), []))
            for row in found[:per_dataset]
        )
        older = shown[-1].run_id if len(found) > per_dataset else None
        usages.append(DatasetUsage(dataset=dataset, runs=shown, older=older))
    return usages


def _dataset_run(
    row: dict[str, int], run: TrainingRun, misses: list[tuple[int, str, str]]
) -> DatasetRun:
    return DatasetRun(
        run_id=run.pk,
        number=run.number,
        problem_slug=run.problem.slug,
        problem_title=run.problem.title,
        status=run.status,
        status_label=run.get_status_display(),
        launched_at=run.created_at,
        finished_at=run.finished_at,
        agreement_number=run.agreement.number,
        first_round=row["first_round"],
        last_round=row["last_round"],
        asked=row["asked"],
        contributed=row["contributed"],
        dropped=row["dropped"],
        rejected=row["rejected"],
        misses=tuple(
            RoundMiss(
                number=number, status=status, label=SiteRound.Status(status).label, reason=reason
            )
            for number, status, reason in misses
        ),
    )


def _latest_runs_per_dataset(
    dataset_ids: list[int], limit: int, before: int | None
) -> list[dict[str, int]]:
    """Per dataset, its part in each of its latest ``limit`` runs, aggregated from site rounds.

    Raw SQL because the ORM groups by a window function placed over an aggregate, which the
    databases refuse; ranking the grouped rows in a derived table keeps it to one query that
    returns at most ``limit`` rows per dataset.
    """
    quote = connection.ops.quote_name
    site = SiteRound._meta
    round_ = Round._meta
    s_dataset = quote(site.get_field("dataset").column)
    s_round = quote(site.get_field("round").column)
    s_status = quote(site.get_field("status").column)
    r_run = quote(round_.get_field("run").column)
    r_number = quote(round_.get_field("number").column)
    r_pk = quote(round_.pk.column)
    params: list[object] = [
        SiteRound.Status.CONTRIBUTED,
        SiteRound.Status.DROPPED,
        SiteRound.Status.REJECTED,
        *dataset_ids,
    ]
    older = ""
    if before is not None:
        older = f"AND r.{r_run} < %s"
        params.append(before)
    params.append(limit)
    # Identifiers come from the models' metadata; every value is a parameter.
    sql = f"""
        SELECT dataset_id, run_id, asked, contributed, dropped, rejected, first_round, last_round
        FROM (
            SELECT s.{s_dataset} AS dataset_id, r.{r_run} AS run_id, COUNT(*) AS asked,
                SUM(CASE WHEN s.{s_status} = %s THEN 1 ELSE 0 END) AS contributed,
                SUM(CASE WHEN s.{s_status} = %s THEN 1 ELSE 0 END) AS dropped,
                SUM(CASE WHEN s.{s_status} = %s THEN 1 ELSE 0 END) AS rejected,
                MIN(r.{r_number}) AS first_round, MAX(r.{r_number}) AS last_round,
                ROW_NUMBER() OVER (
                    PARTITION BY s.{s_dataset} ORDER BY r.{r_run} DESC
                ) AS position
            FROM {quote(site.db_table)} s
            JOIN {quote(round_.db_table)} r ON r.{r_pk} = s.{s_round}
            WHERE s.{s_dataset} IN ({", ".join(["%s"] * len(dataset_ids))}) {older}
            GROUP BY s.{s_dataset}, r.{r_run}
        ) ranked
        WHERE position <= %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _misses(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], list[tuple[int, str, str]]]:
    """The first few dropped or rejected rounds of each (dataset, run) pair, in one query."""
    if not pairs:
        return {}
    rows = (
        SiteRound.objects.filter(
            dataset_id__in={d for d, _r in pairs},
            round__run_id__in={r for _d, r in pairs},
            status__in=[SiteRound.Status.DROPPED, SiteRound.Status.REJECTED],
        )
        .annotate(
            run_id=F("round__run_id"),
            rank=Window(
                RowNumber(),
                partition_by=[F("dataset_id"), F("round__run_id")],
                order_by=F("round__number").asc(),
            ),
        )
        .filter(rank__lte=MISSES_SHOWN)
        .order_by()
        .values_list("dataset_id", "run_id", "round__number", "status", "reason")
    )
    found: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    for dataset_id, run_id, number, status, reason in rows:
        if (dataset_id, run_id) in pairs:
            found.setdefault((dataset_id, run_id), []).append((number, status, reason))
    for misses in found.values():
        misses.sort()
    return found


def people_page_for(
    actor: User, *, after: str | None = None, size: int = PEOPLE_PER_PAGE
) -> tuple[list[Membership], str | None]:
    """One page of the people of the actor's institution by username, and the next cursor."""
    people: QuerySet[Membership] = member_list_for(actor).order_by("user__username")
    if after:
        people = people.filter(user__username__gt=after)
    page = list(people[: size + 1])
    following = page[size - 1].user.username if len(page) > size else None
    return page[:size], following
