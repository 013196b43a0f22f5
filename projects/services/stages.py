"""Where a problem stands: one read model for pages, the API and dashboards, and its moves.

Proposed → ratified → data ready are what the facts imply (``problem_refresh_stage``); after
that a problem only moves forward: training (a run was launched), certified (a model version
met the ratified bar), released (a certified version was released). A later stage never skips
an earlier one, and each move is audited.
"""

from dataclasses import dataclass

from django.db.models import Q
from django.utils.translation import gettext as _

from alliance.services.audit import audit_record
from projects.models import Problem, Release, TrainingRun

LATER = (
    Problem.Stage.DATA_READY,
    Problem.Stage.TRAINING,
    Problem.Stage.CERTIFIED,
    Problem.Stage.RELEASED,
)


def problem_advance_stage(*, problem: Problem, to: str) -> None:
    """Move the problem forward to ``to`` (in the caller's transaction), one stage at a time."""
    problem = Problem.objects.select_for_update().get(pk=problem.pk)
    if problem.stage not in LATER or to not in LATER:
        return
    current, target = LATER.index(problem.stage), LATER.index(to)
    while current < target:
        previous, current = LATER[current], current + 1
        problem.stage = LATER[current]
        problem.save(update_fields=["stage", "updated_at"])
        audit_record(
            actor=None,
            action="problem.stage_changed",
            target=problem,
            subject_institution=problem.proposer,
            payload={"from": previous, "to": problem.stage},
        )


@dataclass(frozen=True)
class ProblemState:
    """What a person needs to know of a problem's progress, read in three queries."""

    stage: str
    stage_label: str
    runs_active: int
    runs_succeeded: int
    certified_models: int
    released_models: int
    next_step: str


def problem_state(problem: Problem) -> ProblemState:
    runs = TrainingRun.objects.filter(problem=problem).order_by()
    active = runs.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
    succeeded = runs.filter(status=TrainingRun.Status.SUCCEEDED).count()
    certified = (
        runs.filter(Q(models__certification__certified=True)).values("models").distinct().count()
    )
    released = Release.objects.filter(model__run__problem=problem).count()
    stage = problem.stage
    next_step = {
        Problem.Stage.PROPOSED: _("Next: every participant ratifies the current revision."),
        Problem.Stage.RATIFIED: _(
            "Next: contributors register their datasets and approve a data-use agreement."
        ),
        Problem.Stage.DATA_READY: _("Next: launch a training run."),
        Problem.Stage.TRAINING: _(
            "Next: a run's final model is scored by the validators; one that meets the bar "
            "is certified."
        ),
        Problem.Stage.CERTIFIED: _(
            "Next: the proposer's admin releases a certified model with its model card."
        ),
        Problem.Stage.RELEASED: _("A model is released; later runs may improve on it."),
    }.get(stage, "")
    return ProblemState(
        stage=stage,
        stage_label=str(Problem.Stage(stage).label),
        runs_active=active.count(),
        runs_succeeded=succeeded,
        certified_models=certified,
        released_models=released,
        next_step=next_step,
    )
