"""Telling people that a run ended: its launcher and the problem's participants (inbox and
email, as each chose), and the webhooks of their institutions.

Called inside the transaction that ends the run: the notifications and deliveries are rows of
it, the emails and webhook posts leave after commit, so a rolled-back ending tells nobody.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse

from alliance.models import Event, Institution
from alliance.services.notices import notify_people
from alliance.services.notifications import absolute_url
from alliance.services.webhooks import webhooks_emit
from projects.models import Participation, TrainingRun

User = get_user_model()

EVENTS = {
    TrainingRun.Status.SUCCEEDED: Event.RUN_SUCCEEDED,
    TrainingRun.Status.FAILED: Event.RUN_FAILED,
    TrainingRun.Status.CANCELLED: Event.RUN_CANCELLED,
}


def run_institution_ids(run: TrainingRun) -> set[int]:
    """The launching institution, the problem's proposer and its active participants."""
    ids = set(
        Participation.objects.filter(
            problem_id=run.problem_id, status=Participation.Status.ACTIVE
        ).values_list("institution_id", flat=True)
    )
    return ids | {run.institution_id, run.problem.proposer_id}


def run_audience(run: TrainingRun, institution_ids: set[int]) -> dict[AbstractBaseUser, str]:
    """Each person to tell, with the email choice that governs them."""
    people: dict[AbstractBaseUser, str] = {}
    launcher = run.launched_by
    if launcher.is_active:
        people[launcher] = "email_own_runs"
    members = User.objects.filter(
        is_active=True,
        membership__institution_id__in=institution_ids,
        membership__institution__status=Institution.Status.ADMITTED,
    ).exclude(pk=launcher.pk)
    for person in members.order_by("pk"):
        people[person] = "email_problem_runs"
    return people


def run_finished_notify(run: TrainingRun) -> None:
    """Tell everyone concerned that ``run`` ended (succeeded, failed or was cancelled)."""
    event = EVENTS.get(run.status)
    if event is None:
        return
    problem = run.problem
    ids = run_institution_ids(run)
    path = run.get_absolute_url()
    params = {"problem": problem.title, "run": run.number}
    notify_people(
        people=run_audience(run, ids),
        event=event,
        params=params,
        path=path,
        template="projects/email/run_finished",
        context={
            "run": run,
            "problem": problem,
            "event": event,
            "reasons": run.reasons,
            "settings_url": absolute_url(reverse("notification-settings")),
        },
    )
    webhooks_emit(
        institution_ids=ids,
        event=event,
        data={
            "problem": {"slug": problem.slug, "title": problem.title},
            "run": run.number,
            "status": run.status,
            "launched_by_institution": run.institution.slug,
            "reasons": [str(r) for r in run.reasons],
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "url": absolute_url(path),
        },
    )
