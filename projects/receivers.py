"""How the projects app follows changes made in the alliance app (connected in ``apps.py``)."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from alliance.models import Institution
from projects.models import Participation, Problem


def problems_follow_institution_status(
    sender: type, *, actor: AbstractBaseUser | None, institution: Institution, **kwargs: Any
) -> None:
    """A suspended, reinstated or withdrawn contributor can change whether a problem's data is
    ready; refresh the stage of every problem it takes part in (audited if it changes)."""
    from projects.services.problems import problem_refresh_stage

    problems = Problem.objects.filter(
        participations__institution=institution,
        participations__status=Participation.Status.ACTIVE,
    ).distinct()
    for problem in problems:
        problem_refresh_stage(actor=actor, problem=problem)
