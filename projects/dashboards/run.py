"""The run dashboard: progress, metric curves, participation, timings and models of one run.

A run has up to a few hundred rounds. The curves cover every completed round; the tables show a
window of ``WINDOW`` rounds with links to older and newer windows by round number.

A closed round never changes again (closing it moves every site still training on, in the same
transaction), so what only closed rounds make (the curves, the timings chart, the headline, the
site columns) is computed once per newly closed round and cached, under a key that names the
run and its last closed round. A request then reads only the rounds of its window and those
still open. Cache or not, the page takes the same four queries, whatever the number of rounds
and sites: only which rows they ask for differs.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from django.utils.html import format_html, json_script
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from projects.dashboards import parse_cursor
from projects.models import ModelVersion, Problem, Round, SiteRound, TrainingRun
from projects.selectors import runs_with_progress

WINDOW = 20
RUNS_PER_PAGE = 25
# portal/settings.py sets no CACHES, so this is Django's local-memory cache: one per process,
# which is enough, since an entry is only a shortcut that any process can rebuild from the
# database. Keys never go stale (see _closed_key); the timeout only frees runs nobody watches.
CLOSED_CACHE_SECONDS = 6 * 3600
# Bumped when what is cached changes shape, so that a shared cache never serves an old one.
CLOSED_CACHE_VERSION = 1

METRIC_LABELS = {
    "accuracy": gettext_lazy("Accuracy"),
    "roc_auc": gettext_lazy("ROC AUC"),
    "f1": gettext_lazy("F1 score"),
    "rmse": gettext_lazy("Root mean squared error"),
    "r2": gettext_lazy("R²"),
    "loss": gettext_lazy("Loss"),
    "mse": gettext_lazy("Mean squared error"),
    "mae": gettext_lazy("Mean absolute error"),
}

TIMING_LABELS = {
    "dispatch": gettext_lazy("dispatch"),
    "queue_wait": gettext_lazy("queue"),
    "site_compute": gettext_lazy("site training"),
    "collection": gettext_lazy("collection"),
    "aggregation": gettext_lazy("aggregation"),
    "persistence": gettext_lazy("storage"),
}

MARK_SYMBOLS = {
    SiteRound.Status.CONTRIBUTED: "✓",
    SiteRound.Status.DROPPED: "⊘",
    SiteRound.Status.REJECTED: "✗",
    SiteRound.Status.CANCELLED: "\u2013",
    SiteRound.Status.DISPATCHED: "…",
    "none": "○",
}


def metric_keys(run: TrainingRun) -> list[str]:
    """The metrics a run's rounds are shown with: what its task's sites report first."""
    if (run.spec or {}).get("task") == "regression":
        return ["r2", "loss"]
    return ["accuracy", "loss"]


def main_metric(run: TrainingRun, metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """The label and value of the run's ratified metric in ``metrics``, else its task's first."""
    ratified = (run.spec or {}).get("metric")
    for key in [*([ratified] if ratified in METRIC_LABELS else []), *metric_keys(run)]:
        value = (metrics or {}).get(key)
        if isinstance(value, int | float):
            return str(METRIC_LABELS[key]), float(value)
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fixed(value: Any, digits: int) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.{digits}f}"


def _point(value: Any) -> float | None:
    # Six decimals are finer than a chart shows and keep the polled part small.
    number = _number(value)
    return None if number is None else round(number, 6)


@dataclass(frozen=True)
class Mark:
    """One cell of the participation matrix: a site's part in a round."""

    status: str  # a SiteRound status, or "none" for a site the policy left out
    symbol: str
    label: str
    reason: str = ""

    # Cached: a window shows the same few marks a hundred times, each read three times.
    @cached_property
    def text(self) -> str:
        return f"{self.label}: {self.reason}" if self.reason else self.label

    @cached_property
    def cell(self) -> str:
        return f"site-{self.status or 'absent'}"

    @cached_property
    def html(self) -> str:
        """The matrix cell, written once per mark rather than by the template per cell."""
        if not self.status:
            inner = format_html(
                '<span class="muted" title="{}">—<span class="visually-hidden"> {}</span></span>',
                self.label,
                self.label,
            )
        elif self.reason:
            inner = format_html(
                '<abbr class="mark {}" title="{}" tabindex="0" data-tip="{}"><span aria-hidden='
                '"true">{}</span><span class="visually-hidden">{}</span></abbr>',
                self.status,
                self.text,
                self.text,
                self.symbol,
                self.text,
            )
        else:
            inner = format_html(
                '<span class="mark {}" title="{}"><span aria-hidden="true">{}</span>'
                '<span class="visually-hidden">{}</span></span>',
                self.status,
                self.label,
                self.symbol,
                self.label,
            )
        return format_html('<td class="{}">{}</td>', self.cell, inner)


@dataclass(frozen=True)
class Window:
    """Which rounds the tables show, and the cursors to the neighbouring windows."""

    first: int | None
    last: int | None
    older: int | None  # ?before=<older>
    newer: int | None  # ?after=<newer>
    query: str  # the cursor of this window, for the live part's address ("" = the latest)


@dataclass
class RoundLine:
    """One row of the window's tables; figures come as text, formatted once here rather than
    by a template filter per cell (a window has a few hundred of them, redrawn every poll)."""

    number: str
    status: str
    status_label: str
    reason: str
    contributors: str
    metrics: list[str]
    site_metrics: list[str]  # the main metric of each site column
    marks: list[Mark]
    timings: list[str]
    wall: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    # The data as Django's json_script makes it: serialised once, when the chart is cached.
    script: str


@dataclass(frozen=True)
class ClosedRounds:
    """What the closed rounds of a run show. They never change, so this is cached."""

    seen: frozenset[str]  # metric keys the rounds reported
    sites: frozenset[str]  # every site that took part or was left out
    headline: tuple[str, float] | None  # (label, value) of the latest successful round
    last_contributions: tuple[int, int] | None  # (contributed, sites) in the latest one
    metric_charts: tuple[Chart, ...]
    timing_chart: Chart | None


@dataclass
class RunDashboard:
    """Everything the run page draws, in plain values."""

    run: TrainingRun
    done: int
    state: str  # changes exactly when a round closes: the live part resends charts only then
    progress_percent: int
    # (label, value): the final model's own figure once it is scored, else that of the global
    # model the latest successful round started from.
    headline: tuple[str, float] | None
    headline_is_final: bool
    headline_rows: int | None  # the validation rows the final model's figure is measured on

    @property
    def settled(self) -> bool:
        """Nothing more to follow: the run finished, and a succeeded run's final model is
        scored (its figure arrives after the last round)."""
        if not self.run.is_finished:
            return False
        return self.run.status != TrainingRun.Status.SUCCEEDED or self.headline is not None

    last_contributions: tuple[int, int] | None  # (contributed, sites) in the latest closed round
    elapsed: float | None
    metric_labels: list[str]
    main_label: str
    sites: list[str]
    lines: list[RoundLine]  # the window, newest first
    window: Window
    metric_charts: list[Chart]
    timing_chart: Chart | None
    timing_labels: list[str]
    models: list[ModelVersion] = field(default_factory=list)


def parse_window(params: Any) -> tuple[int | None, int | None, bool]:
    """``(before, after, valid)`` from a request's query: bad cursors are dropped, not fatal."""
    try:
        before = parse_cursor(params.get("before"))
        after = parse_cursor(params.get("after"))
    except ValueError:
        return None, None, False
    if before is not None:
        after = None
    return before, after, True


def _window(numbers: list[int], before: int | None, after: int | None) -> tuple[list[int], Window]:
    if before is not None:
        chosen = [n for n in numbers if n < before][-WINDOW:]
        query = f"?before={before}"
    elif after is not None:
        chosen = [n for n in numbers if n > after][:WINDOW]
        query = f"?after={after}"
    else:
        chosen = numbers[-WINDOW:]
        query = ""
    if not chosen and numbers:
        # Past either end: show the latest rounds rather than an empty table.
        chosen, query = numbers[-WINDOW:], ""
    first = chosen[0] if chosen else None
    last = chosen[-1] if chosen else None
    return chosen, Window(
        first=first,
        last=last,
        older=first if first is not None and first > numbers[0] else None,
        newer=last if last is not None and last < numbers[-1] else None,
        query=query,
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return max(((end or timezone.now()) - start).total_seconds(), 0.0)


def _closed_key(run: TrainingRun, closed: int, last_closed: int) -> str:
    # The primary key alone could name another run (SQLite reuses the ids of deleted rows), hence
    # the launch time; the closed rounds' count and last number change with every close, and
    # the labels inside are translated, hence the language.
    return (
        f"run-dashboard:{CLOSED_CACHE_VERSION}:{run.pk}:{run.created_at.isoformat()}:"
        f"{closed}:{last_closed}:{get_language()}"
    )


# A round as read for the page: id, number, status, reason, contributors, metrics, timings,
# excluded sites, started at, closed at.
# ... metrics (the local updates'), timings, excluded, started, closed, global_metrics (the
# model the round started from).
RoundRow = tuple[int, int, str, str, int, dict, dict, list, datetime, datetime | None, dict]
# A site's part: status, reason, and its values of the metric keys, in order.
SitePart = tuple[str, str, tuple[Any, ...]]


def _left_out(excluded: Any) -> dict[str, str]:
    return {
        str(e["name"]): str(e.get("reason") or "")
        for e in (excluded or [])
        if isinstance(e, dict) and e.get("name")
    }


def _chart_keys(run: TrainingRun, seen: Iterable[str]) -> list[str]:
    # Extra scores the sites report (ROC AUC of a binary task) are charted after the main ones.
    keys = metric_keys(run)
    seen = set(seen)
    return keys + [key for key in METRIC_LABELS if key in seen and key not in keys]


def _closed_rounds(
    run: TrainingRun,
    rounds: list[RoundRow],
    parts: dict[int, dict[str, SitePart]],
    keys: list[str],
) -> ClosedRounds:
    """The curves, timings chart, headline and sites of ``rounds``, all closed, in order."""
    sites: set[str] = set()
    for r in rounds:
        sites.update(parts.get(r[0], {}))
        sites.update(_left_out(r[7]))
    ordered = sorted(sites)
    succeeded = [r for r in rounds if r[2] == Round.Status.SUCCEEDED]
    labels = [str(r[1]) for r in succeeded]
    contributed = SiteRound.Status.CONTRIBUTED
    # One pass over the completed rounds gathers every site's points for every metric.
    site_points: dict[str, list[list[float | None]]] = {
        name: [[] for _key in keys] for name in ordered
    }
    for r in succeeded:
        round_parts = parts.get(r[0], {})
        for name in ordered:
            part = round_parts.get(name)
            values = part[2] if part is not None and part[0] == contributed else ()
            for index, points in enumerate(site_points[name]):
                points.append(_point(values[index]) if values else None)
    metric_charts = []
    for index, key in enumerate(keys):
        label = str(METRIC_LABELS[key])
        datasets = [
            {
                "label": _("Global model the round started from"),
                "data": [_point((r[10] or {}).get(key)) for r in succeeded],
            },
            {
                "label": _("Local updates (weighted)"),
                "data": [_point((r[5] or {}).get(key)) for r in succeeded],
                "dashed": True,
            },
        ]
        for name in ordered:
            points = site_points[name][index]
            if any(p is not None for p in points):
                datasets.append({"label": name, "data": points, "dashed": True})
        chart_id = f"run-chart-{key}"
        metric_charts.append(
            Chart(
                id=chart_id,
                title=_("%(metric)s per round") % {"metric": label},
                description=_(
                    "%(metric)s in each of the %(n)s completed rounds: of the global model the "
                    "round started from, scored by every site on its validation rows before "
                    "training, and of the sites' local updates, together and site by site."
                )
                % {"metric": label, "n": len(succeeded)},
                script=json_script(
                    {
                        "type": "line",
                        "labels": labels,
                        "x_label": _("Round"),
                        "y_label": label,
                        # The axis follows the data: differences of a few thousandths show.
                        "y_min": None,
                        "y_max": None,
                        "datasets": datasets,
                    },
                    chart_id,
                ),
            )
        )
    timing_chart = None
    if rounds:
        timing_chart = Chart(
            id="run-chart-timings",
            title=_("Time per round"),
            description=_(
                "Seconds spent in each phase of the %(n)s closed rounds, stacked: dispatch, "
                "queue, site training, collection, aggregation and storage."
            )
            % {"n": len(rounds)},
            script=json_script(
                {
                    "type": "bar",
                    "stacked": True,
                    "labels": [str(r[1]) for r in rounds],
                    "x_label": _("Round"),
                    "y_label": _("seconds"),
                    "y_min": 0,
                    "datasets": [
                        {
                            "label": str(label),
                            "data": [_point((r[6] or {}).get(key)) or 0.0 for r in rounds],
                        }
                        for key, label in TIMING_LABELS.items()
                    ],
                },
                "run-chart-timings",
            ),
        )
    last_contributions = None
    if rounds:
        latest = parts.get(rounds[-1][0], {})
        last_contributions = (sum(1 for p in latest.values() if p[0] == contributed), len(latest))
    return ClosedRounds(
        seen=frozenset(key for r in rounds for key in (r[5] or {})),
        sites=frozenset(sites),
        headline=main_metric(run, succeeded[-1][10]) if succeeded else None,
        last_contributions=last_contributions,
        metric_charts=tuple(metric_charts),
        timing_chart=timing_chart,
    )


def run_dashboard(
    run: TrainingRun, *, before: int | None = None, after: int | None = None
) -> RunDashboard:
    """The run page's figures, in four queries whatever the number of rounds and sites.

    Every round's number and status (small) tell the window and the cache key; the closed
    rounds' part comes from the cache, or else from every round read once. Then the rounds
    of the window and the open ones, their sites' parts (only the metrics shown), and the
    models of the window.
    """
    states = list(Round.objects.filter(run=run).order_by("number").values_list("number", "status"))
    numbers = [number for number, _status in states]
    open_numbers = {number for number, status in states if status == Round.Status.RUNNING}
    closed_numbers = [number for number, status in states if status != Round.Status.RUNNING]
    done = sum(1 for _number, status in states if status == Round.Status.SUCCEEDED)
    chosen, window = _window(numbers, before, after)
    key = _closed_key(run, len(closed_numbers), closed_numbers[-1] if closed_numbers else 0)
    closed_part: ClosedRounds | None = cache.get(key)

    rounds_read = Round.objects.filter(run=run)
    if closed_part is not None:
        rounds_read = rounds_read.filter(number__in=[*chosen, *open_numbers])
    rounds: list[RoundRow] = list(
        rounds_read.order_by("number").values_list(
            "id",
            "number",
            "status",
            "reason",
            "contributors",
            "metrics",
            "timings",
            "excluded",
            "started_at",
            "closed_at",
            "global_metrics",
        )
    )
    seen = {k for r in rounds for k in (r[5] or {})} | (closed_part.seen if closed_part else set())
    keys = _chart_keys(run, seen)
    main_key = keys[0]
    # Only the metrics shown are read from the sites' answers, never their whole JSON.
    site_rows = (
        SiteRound.objects.filter(round_id__in=[r[0] for r in rounds])
        if closed_part is not None
        else SiteRound.objects.filter(round__run=run)
    )
    parts: dict[int, dict[str, SitePart]] = defaultdict(dict)
    for round_id, name, status, reason, *values in site_rows.order_by().values_list(
        "round_id", "institution__name", "status", "reason", *[f"metrics__{k}" for k in keys]
    ):
        parts[round_id][name] = (status, reason, tuple(values))

    if closed_part is None:
        # The rounds closed when this request began: a round closing meanwhile waits for the
        # next key, so that what is cached under this one is exactly what it names.
        closed_set = set(closed_numbers)
        closed_part = _closed_rounds(run, [r for r in rounds if r[1] in closed_set], parts, keys)
        cache.set(key, closed_part, CLOSED_CACHE_SECONDS)

    site_names = set(closed_part.sites)
    for r in rounds:
        site_names.update(parts.get(r[0], {}))
        site_names.update(_left_out(r[7]))
    sites = sorted(site_names)

    models = list(
        run.models.filter(
            round_number__in=[*chosen, *([0] if not chosen or chosen[0] == 1 else [])]
        ).order_by("-round_number")
    )
    shown = set(chosen)
    lines = _lines([r for r in rounds if r[1] in shown], parts, sites, keys, main_key)
    headline, final_rows = closed_part.headline, None
    if run.status == TrainingRun.Status.SUCCEEDED:
        final = next((m for m in models if m.round_number == run.rounds), None)
        if final is None:
            final = run.models.filter(round_number=run.rounds).only("metrics").first()
        headline = main_metric(run, final.metrics) if final is not None else None
        final_rows = final.evaluated_rows if final is not None else None
    return RunDashboard(
        run=run,
        done=done,
        state=f"{len(closed_numbers)}.{closed_numbers[-1] if closed_numbers else 0}",
        progress_percent=round(100 * done / run.rounds) if run.rounds else 0,
        headline=headline,
        headline_is_final=run.status == TrainingRun.Status.SUCCEEDED,
        headline_rows=final_rows,
        last_contributions=closed_part.last_contributions,
        elapsed=_seconds(run.started_at, run.finished_at),
        metric_labels=[str(METRIC_LABELS[k]) for k in keys],
        main_label=str(METRIC_LABELS[main_key]),
        sites=sites,
        lines=lines,
        window=window,
        metric_charts=list(closed_part.metric_charts),
        timing_chart=closed_part.timing_chart,
        timing_labels=[str(label) for label in TIMING_LABELS.values()],
        models=models,
    )


def _lines(
    rounds: list[RoundRow],
    parts: dict[int, dict[str, SitePart]],
    sites: list[str],
    keys: list[str],
    main_key: str,
) -> list[RoundLine]:
    """The window's rows, newest first, every cell formatted here."""
    statuses = {value: str(label) for value, label in SiteRound.Status.choices}
    round_statuses = {value: str(label) for value, label in Round.Status.choices}
    left_label = _("Left out")
    absent = Mark("", "", _("Not part of this round"))
    main = keys.index(main_key)
    contributed = SiteRound.Status.CONTRIBUTED
    known: dict[tuple[str, str], Mark] = {}
    lines: list[RoundLine] = []
    for (
        id_,
        number,
        status,
        reason,
        contributors,
        _local,
        timings,
        excluded,
        start,
        end,
        started_from,
    ) in rounds:
        round_parts = parts.get(id_, {})
        left_out = _left_out(excluded)
        marks = []
        site_metrics = []
        for name in sites:
            part = round_parts.get(name)
            if part is not None:
                site_status, site_reason, values = part
                if site_status == contributed:
                    site_reason = ""
                    site_metrics.append(_fixed(values[main], 4))
                else:
                    site_metrics.append("—")
                mark = known.get((site_status, site_reason))
                if mark is None:
                    mark = known[site_status, site_reason] = Mark(
                        status=site_status,
                        symbol=MARK_SYMBOLS.get(site_status, "?"),
                        label=statuses.get(site_status, site_status),
                        reason=site_reason,
                    )
                marks.append(mark)
            else:
                site_metrics.append("—")
                if name in left_out:
                    marks.append(Mark("none", MARK_SYMBOLS["none"], left_label, left_out[name]))
                else:
                    marks.append(absent)
        lines.append(
            RoundLine(
                number=str(number),
                status=status,
                status_label=round_statuses.get(status, status),
                reason=reason,
                contributors="—" if status == Round.Status.RUNNING else str(contributors),
                metrics=[_fixed((started_from or {}).get(k), 4) for k in keys],
                site_metrics=site_metrics,
                marks=marks,
                timings=[_fixed((timings or {}).get(k), 3) for k in TIMING_LABELS],
                wall=_fixed(_seconds(start, end), 2) if end else "—",
            )
        )
    lines.reverse()
    return lines


@dataclass
class RunPage:
    """One page of a problem's runs, newest first, with cursors by run number."""

    rows: list[tuple[TrainingRun, tuple[str, float] | None]]
    older: int | None  # ?before=<older>
    newer: int | None  # ?after=<newer>
    latest_link: bool  # a link back to the newest runs


def run_page(problem: Problem, *, before: int | None, after: int | None) -> RunPage:
    """Runs with their progress and latest metric, a page at a time, in one query."""
    runs = runs_with_progress(problem)
    if after is not None:
        chosen = list(runs.filter(number__gt=after).order_by("number")[: RUNS_PER_PAGE + 1])
        more_newer = len(chosen) > RUNS_PER_PAGE
        chosen = chosen[:RUNS_PER_PAGE][::-1]
        more_older = True
    else:
        if before is not None:
            runs = runs.filter(number__lt=before)
        chosen = list(runs[: RUNS_PER_PAGE + 1])
        more_older = len(chosen) > RUNS_PER_PAGE
        chosen = chosen[:RUNS_PER_PAGE]
        more_newer = before is not None
    for run in chosen:
        run.problem = problem
    return RunPage(
        rows=[(run, main_metric(run, run.last_metrics)) for run in chosen],
        older=chosen[-1].number if chosen and more_older else None,
        newer=chosen[0].number if chosen and more_newer else None,
        latest_link=before is not None or after is not None,
    )
