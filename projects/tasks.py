"""Coordinator tasks (queue ``coordinator``): thin wrappers around the run services.

Each one is idempotent, so a redelivery after a lost worker (late acks) does no harm. Deadlines
and resends are not tasks: a coordinator process runs the reconciler, which reads them from the
database (``projects.services.runs.reconcile``).
"""

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from alliance.services.audit import sign_on_commit
from projects.services import runs, sites

_reconciler: runs.Reconciler | None = None


@shared_task(name="projects.run_advance_task", ignore_result=True)
def run_advance_task(run_id: int) -> None:
    runs.run_advance(run_id)


@shared_task(name="projects.update_receive_task", ignore_result=True)
def update_receive_task(reply: dict) -> None:
    runs.update_receive(reply)


@shared_task(name="projects.heartbeat_receive_task", ignore_result=True)
def heartbeat_receive_task(wire: dict) -> None:
    sites.heartbeat_receive(wire)


@worker_ready.connect
def reconcile_on_start(sender: object = None, **kwargs: object) -> None:
    """A coordinator worker reconciles at once, then every FEDERATION_RECONCILE_SECONDS."""
    global _reconciler
    app = getattr(sender, "app", None)
    queues = getattr(getattr(app, "amqp", None), "queues", None)
    consuming = getattr(queues, "consume_from", None) or {}
    if "coordinator" in consuming and _reconciler is None:
        sign_on_commit(False)  # the reconciler signs the audit log's new events each pass
        _reconciler = runs.Reconciler()
        _reconciler.start()


@worker_shutdown.connect
def stop_reconciling(sender: object = None, **kwargs: object) -> None:
    global _reconciler
    if _reconciler is not None:
        _reconciler.stop()
        _reconciler = None


@shared_task(name="projects.approval_reminders_task", ignore_result=True)
def approval_reminders_task() -> None:
    """Celery beat's hourly look at waiting decisions (one reminder a day per person)."""
    from projects.services.reminders import approvals_remind

    approvals_remind()
