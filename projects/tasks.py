"""Coordinator tasks (queue ``coordinator``): thin wrappers around the run services.

Each one is idempotent, so a redelivery after a lost worker (late acks) does no harm.
"""

from celery import shared_task
from celery.signals import worker_ready

from projects.services import runs, sites


@shared_task(name="projects.run_advance_task", ignore_result=True)
def run_advance_task(run_id: int) -> None:
    runs.run_advance(run_id)


@shared_task(name="projects.update_receive_task", ignore_result=True)
def update_receive_task(reply: dict) -> None:
    runs.update_receive(reply)


@shared_task(name="projects.heartbeat_receive_task", ignore_result=True)
def heartbeat_receive_task(wire: dict) -> None:
    sites.heartbeat_receive(wire)


@shared_task(name="projects.round_deadline_task", ignore_result=True)
def round_deadline_task(run_id: int, round_number: int) -> None:
    runs.round_deadline(run_id, round_number)


@shared_task(name="projects.runs_resume_task", ignore_result=True)
def runs_resume_task() -> None:
    runs.runs_resume()


@worker_ready.connect
def resume_on_start(sender: object = None, **kwargs: object) -> None:
    """A coordinator worker that (re)starts picks up the runs a stopped one left open."""
    app = getattr(sender, "app", None)
    queues = getattr(getattr(app, "amqp", None), "queues", None)
    consuming = getattr(queues, "consume_from", None) or {}
    if "coordinator" in consuming:
        runs_resume_task.apply_async(queue="coordinator")
