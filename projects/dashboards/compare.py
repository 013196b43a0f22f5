"""Runs of a problem side by side: settings, final figures, verdicts and curves overlaid."""

from dataclasses import dataclass
from typing import Any

from django.utils.html import json_script
from django.utils.translation import gettext as _

from projects.dashboards.run import METRIC_LABELS, Chart
from projects.models import Certification, Evaluation, ModelVersion, Problem, Round, TrainingRun

MAX_RUNS = 6


@dataclass(frozen=True)
class ComparedRun:
    run: TrainingRun
    final: ModelVersion | None
    certification: Certification | None
    validations: list[Evaluation]


def parse_numbers(text: str | None) -> list[int] | None:
    """``"1,3,4"`` as run numbers; None when absent or not whole numbers."""
    if not text:
        return None
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
    if any(n < 1 or n > 2**31 for n in numbers):
        return None
    return list(dict.fromkeys(numbers))[:MAX_RUNS]


def compare_runs(
    problem: Problem, numbers: list[int] | None
) -> tuple[list[ComparedRun], Chart | None]:
    """The chosen runs (default: the latest finished ones) and their curves overlaid."""
    runs = problem.runs.select_related("agreement").order_by("-number")
    if numbers:
        runs = runs.filter(number__in=numbers)
    else:
        runs = runs.filter(status__in=TrainingRun.FINISHED)
    chosen = list(runs[:MAX_RUNS])
    finals = {
        m.run_id: m
        for m in ModelVersion.objects.filter(run__in=chosen).select_related("certification")
        if any(m.run_id == r.pk and m.round_number == r.rounds for r in chosen)
    }
    validations: dict[int, list[Evaluation]] = {}
    for e in Evaluation.objects.filter(
        model__in=finals.values(), kind=Evaluation.Kind.VALIDATE
    ).select_related("institution"):
        validations.setdefault(e.model_id, []).append(e)
    compared = []
    for run in chosen:
        run.problem = problem
        final = finals.get(run.pk)
        compared.append(
            ComparedRun(
                run=run,
                final=final,
                certification=getattr(final, "certification", None) if final else None,
                validations=validations.get(final.pk, []) if final else [],
            )
        )
    metric = (chosen[0].spec or {}).get("metric", "accuracy") if chosen else "accuracy"
    series: dict[int, dict[int, float]] = {}
    for run_id, number, figures in Round.objects.filter(
        run__in=chosen, status=Round.Status.SUCCEEDED
    ).values_list("run_id", "number", "global_metrics"):
        value = (figures or {}).get(metric)
        if isinstance(value, int | float):
            series.setdefault(run_id, {})[number] = round(float(value), 6)
    if not series:
        return compared, None
    longest = max(max(points) for points in series.values())
    label = str(METRIC_LABELS.get(metric, metric))
    chart = Chart(
        id="compare-chart",
        title=_("%(metric)s of the global model each round started from") % {"metric": label},
        description=_("One line per run: %(metric)s per round, as the sites scored it.")
        % {"metric": label},
        script=json_script(
            {
                "type": "line",
                "labels": [str(n) for n in range(1, longest + 1)],
                "x_label": _("Round"),
                "y_label": label,
                "y_min": None,
                "y_max": None,
                "datasets": [
                    {
                        "label": _("Run %(n)s") % {"n": c.run.number},
                        "data": [series.get(c.run.pk, {}).get(n) for n in range(1, longest + 1)],
                    }
                    for c in compared
                ],
            },
            "compare-chart",
        ),
    )
    return compared, chart


def compare_context(problem: Problem, numbers: list[int] | None) -> dict[str, Any]:
    compared, chart = compare_runs(problem, numbers)
    return {"compared": compared, "chart": chart}
