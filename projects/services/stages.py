"""A problem's stage, moved forward by what its runs and models achieve.

Proposed → ratified → data ready are what the facts imply (``problem_refresh_stage``); after
that a problem only moves forward: training (a run was launched), certified (a model version
met the ratified bar), released (a certified version was released). A later stage never skips
an earlier one, and each move is audited.
"""

from alliance.services.audit import audit_record
from projects.models import Problem

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
