"""The alliance at a glance: members, problems, training activity and models.

Three audiences read these figures: visitors on the home page (public aggregate counts only, no
title of an invitation-only problem), members on their dashboard (the same counts plus the
models and events they may see) and staff in the console (what needs them). Every function runs
a fixed number of queries whatever the number of institutions, runs, rounds or events.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, DateField, F, Q
from django.db.models.functions import TruncWeek
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from alliance import selectors as alliance_selectors
from alliance.models import AuditEvent, MembershipApplication
from projects.audit_display import ROUND_ACTIONS
from projects.models import ModelVersion, Problem, Round, TrainingRun
from projects.permissions import is_staff, problem_visible_to

User = AbstractBaseUser | AnonymousUser

ACTIVITY_WEEKS = 12
LATEST_MODELS = 5
RECENT_EVENTS = 10
# How many of the newest events the activity feed reads to fill its lines.
RECENT_WINDOW = 200
STAFF_LIST_LENGTH = 10


@dataclass(frozen=True)
class Figure:
    """One labelled count, e.g. a sector and its number of member institutions."""

    value: str
    label: str
    count: int


@dataclass(frozen=True)
class TrainingTotals:
    """What the alliance has trained so far, counted over every problem."""

    runs_launched: int
    runs_completed: int
    rounds_completed: int
    models_produced: int  # final models of succeeded runs
    models_certified: int
    models_released: int


@dataclass(frozen=True)
class WeekActivity:
    """Runs launched and rounds completed in the week that starts on ``start`` (a Monday)."""

    start: datetime.date
    label: str
    runs_launched: int
    rounds_completed: int


@dataclass(frozen=True)
class AllianceSummary:
    """The public figures of the alliance, shown to visitors and members alike."""

    member_total: int
    sectors: list[Figure]
    stages: list[Figure]
    problem_total: int
    training: TrainingTotals

    @property
    def sector_max(self) -> int:
        """The longest bar of the sector chart, to scale the others against."""
        return max((f.count for f in self.sectors), default=0)

    @property
    def stage_max(self) -> int:
        return max((f.count for f in self.stages), default=0)


def member_figures_by_sector() -> list[Figure]:
    """Admitted institutions per sector, in the declared order, empty sectors included."""
    return [
        Figure(row["value"], str(row["sector"]), row["count"])
        for row in alliance_selectors.member_counts_by_sector()
    ]


def problem_figures_by_stage() -> list[Figure]:
    """Problems per lifecycle stage, over every problem (a count reveals no title)."""
    counts = dict(Problem.objects.values_list("stage").annotate(n=Count("id")).order_by())
    return [Figure(s.value, str(s.label), counts.get(s.value, 0)) for s in Problem.Stage]


def training_totals() -> TrainingTotals:
    """Runs, rounds and models over the whole alliance, in four counting queries."""
    runs = TrainingRun.objects.aggregate(
        launched=Count("id"),
        completed=Count("id", filter=Q(status=TrainingRun.Status.SUCCEEDED)),
    )
    return TrainingTotals(
        runs_launched=runs["launched"],
        runs_completed=runs["completed"],
        rounds_completed=Round.objects.filter(status=Round.Status.SUCCEEDED).count(),
        # A run produces one model: its final one; every round's is a step towards it.
        models_produced=runs["completed"],
        **ModelVersion.objects.aggregate(
            models_certified=Count("id", filter=Q(certification__certified=True)),
            models_released=Count("id", filter=Q(release__isnull=False)),
        ),
    )


def alliance_summary() -> AllianceSummary:
    """Every public figure of the home page and the dashboard."""
    sectors = member_figures_by_sector()
    stages = problem_figures_by_stage()
    return AllianceSummary(
        member_total=sum(f.count for f in sectors),
        sectors=sectors,
        stages=stages,
        problem_total=sum(f.count for f in stages),
        training=training_totals(),
    )


def _week_start(day: datetime.date) -> datetime.date:
    return day - datetime.timedelta(days=day.weekday())


def weekly_activity(weeks: int = ACTIVITY_WEEKS) -> list[WeekActivity]:
    """Runs launched and rounds completed per week over the last ``weeks`` weeks, oldest first.

    Weeks without activity are present with zeros, so a chart's x axis is regular time.
    """
    this_week = _week_start(timezone.localdate())
    first = this_week - datetime.timedelta(weeks=weeks - 1)
    since = timezone.make_aware(datetime.datetime.combine(first, datetime.time.min))
    week = TruncWeek("created_at", output_field=DateField())
    launched = dict(
        TrainingRun.objects.filter(created_at__gte=since)
        .annotate(week=week)
        .values_list("week")
        .annotate(n=Count("id"))
        .order_by()
    )
    completed = dict(
        Round.objects.filter(status=Round.Status.SUCCEEDED, closed_at__gte=since)
        .annotate(week=TruncWeek("closed_at", output_field=DateField()))
        .values_list("week")
        .annotate(n=Count("id"))
        .order_by()
    )
    rows = []
    for i in range(weeks):
        start = first + datetime.timedelta(weeks=i)
        rows.append(
            WeekActivity(
                start=start,
                label=date_format(start, "Y-m-d"),
                runs_launched=launched.get(start, 0),
                rounds_completed=completed.get(start, 0),
            )
        )
    return rows


def activity_chart(weeks: list[WeekActivity]) -> dict:
    """The chart data of ``static/js/charts.js`` for the weekly activity."""
    return {
        "type": "bar",
        "labels": [w.label for w in weeks],
        "x_label": _("Week starting"),
        "y_label": _("Count"),
        "y_min": 0,
        "y_whole": True,
        "datasets": [
            {"label": _("Runs launched"), "data": [w.runs_launched for w in weeks]},
            {"label": _("Rounds completed"), "data": [w.rounds_completed for w in weeks]},
        ],
    }


def latest_models_for(actor: User, limit: int = LATEST_MODELS) -> list[ModelVersion]:
    """The most recent trained models of problems the actor may see, newest first."""
    models = ModelVersion.objects.filter(round_number__gt=0)
    if not is_staff(actor):
        models = models.filter(run__problem__in=problem_visible_to(actor).values("pk"))
    # The primary key follows creation order and is indexed, unlike created_at.
    return list(models.select_related("run__problem").order_by("-pk")[:limit])


@dataclass
class ActivityLine:
    """One line of the activity feed: an event, or every recent round event of one run.

    ``event`` is the line's newest event. For a run's round events (``rounds`` set) the line
    also holds the lowest and highest round number seen and how many events it gathers.
    """

    event: AuditEvent
    rounds: tuple[int, int] | None = None
    count: int = 1

    def gather(self, event: AuditEvent) -> None:
        self.count += 1
        number = _round_number(event)
        if number is not None and self.rounds is not None:
            self.rounds = (min(self.rounds[0], number), max(self.rounds[1], number))
        elif number is not None:
            self.rounds = (number, number)


def _round_number(event: AuditEvent) -> int | None:
    value = event.payload.get("round") if isinstance(event.payload, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def recent_activity_for(
    actor: User, limit: int = RECENT_EVENTS, window: int = RECENT_WINDOW
) -> list[ActivityLine]:
    """The latest audit events the actor may read, newest first, as at most ``limit`` lines.

    A run's round events (started, closed, failed, an update rejected) gather into one line per
    run, where the run's newest one falls: a ten-round run is one line, not twenty. Only the
    newest ``window`` events are read, so a long run cannot make the feed scan the trail.
    """
    lines: list[ActivityLine] = []
    runs: dict[tuple[str, str], ActivityLine] = {}
    events = alliance_selectors.audit_event_list_for(actor)
    # The window as plain rows (what gathering needs); only the lines' own events, ten at
    # most, are then read whole with their institutions: not two hundred model instances.
    window_rows = events.order_by("-seq").values_list(
        "pk", "action", "target_type", "target_id", "payload"
    )[:window]
    for pk, action, target_type, target_id, payload in window_rows:
        event = _Row(action, payload)
        is_round = action in ROUND_ACTIONS and bool(target_id)
        key = (target_type, target_id)
        if is_round and key in runs:
            runs[key].gather(event)  # type: ignore[arg-type]
            continue
        if len(lines) >= limit:
            continue  # the feed is full; older round events may still widen a line's range
        line = ActivityLine(event=pk)  # type: ignore[arg-type]  # the event itself below
        if is_round:
            line.count = 0
            line.gather(event)  # type: ignore[arg-type]
            runs[key] = line
        lines.append(line)
    if lines:
        whole = events.in_bulk([line.event for line in lines])
        for line in lines:
            line.event = whole[line.event]  # type: ignore[index]
    return lines


@dataclass(frozen=True)
class _Row:
    """What gathering reads of an event."""

    action: str
    payload: Any


# --- The staff console ---------------------------------------------------------------------


@dataclass(frozen=True)
class StaffSummary:
    """What waits for alliance staff: applications, institutions, failing runs."""

    pending_total: int
    pending: list[MembershipApplication]
    statuses: list[Figure]
    failed_total: int
    failed_runs: list[TrainingRun]


def staff_summary(limit: int = STAFF_LIST_LENGTH) -> StaffSummary:
    """The staff console's figures: oldest applications first, most recent failures first."""
    pending = alliance_selectors.application_list_pending()
    failed = TrainingRun.objects.filter(status=TrainingRun.Status.FAILED)
    return StaffSummary(
        pending_total=pending.count(),
        pending=list(pending[:limit]),
        statuses=[
            Figure(row["value"], str(row["status"]), row["count"])
            for row in alliance_selectors.institution_status_rows()
        ],
        failed_total=failed.count(),
        failed_runs=list(
            failed.select_related("problem", "institution").order_by(
                F("finished_at").desc(nulls_last=True), "-pk"
            )[:limit]
        ),
    )
