"""The Celery side of a member's site worker: its task queue ``site.<slug>`` and its heartbeats.

The work is in ``projects.site``: this module only receives a task, hands it over and sends the
signed answer to the coordinator's queue. It never touches the portal's database.
"""

import logging
from typing import Any

from celery import current_app, shared_task
from celery.signals import worker_ready, worker_shutdown

from projects.site.handler import handle_task
from projects.site.heartbeat import HeartbeatThread

logger = logging.getLogger(__name__)

_heartbeat: HeartbeatThread | None = None


def send_to_coordinator(task_name: str, wire: dict) -> None:
    """Put a message on the coordinator's queue, and nothing else.

    By name: the site side does not import the coordinator's code. ``declare=[]``: the
    coordinator declares its own queue; a site that may only push to it (its broker user's ACL,
    ``manage.py broker_acl``) cannot, and must not, rebind it.
    """
    current_app.send_task(task_name, args=[wire], queue="coordinator", declare=[])


@shared_task(bind=True, name="projects.site_train_task", ignore_result=True)
def site_train_task(self: Any, wire: Any) -> None:
    queue = (self.request.delivery_info or {}).get("routing_key")
    reply = handle_task(wire, queue=queue)
    if reply is not None:
        send_to_coordinator("projects.update_receive_task", reply.to_wire())


def _site_queues(sender: Any) -> list[str]:
    app = getattr(sender, "app", None)
    queues = getattr(getattr(app, "amqp", None), "queues", None)
    consuming = getattr(queues, "consume_from", None) or {}
    return [name[5:] for name in consuming if name.startswith("site.")]


@worker_ready.connect
def start_heartbeats(sender: object = None, **kwargs: object) -> None:
    """A worker that serves site queues says so, signed, every SITE_HEARTBEAT_SECONDS."""
    global _heartbeat
    slugs = _site_queues(sender)
    if not slugs or _heartbeat is not None:
        return
    _heartbeat = HeartbeatThread(
        lambda wire: send_to_coordinator("projects.heartbeat_receive_task", wire), slugs
    )
    _heartbeat.start()


@worker_shutdown.connect
def stop_heartbeats(sender: object = None, **kwargs: object) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
