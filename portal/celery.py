"""The Celery application shared by the web process, the coordinator and the site workers."""

import math
import os
import time

from celery import Celery
from celery.signals import task_prerun, task_success
from kombu.transport import TRANSPORT_ALIASES

# "filesystem://" (the embedded default) takes the transport that writes messages atomically.
TRANSPORT_ALIASES["filesystem"] = "portal.common.broker:Transport"
# Redis, as kombu's transport but with a worker that goes on consuming when an acknowledgement
# fails as Redis dies, and one client for a channel's commands (see there).
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "portal.common.broker:RedisTransport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# A connection that served a task this recently is not checked again (``SELECT 1``) before the
# next one: during a run the coordinator takes a task every few milliseconds, and the check was a
# round trip to PostgreSQL each time. After a pause, or after an error, it is checked as Django
# checks before a request.
HEALTH_CHECK_AFTER_IDLE = 1.0
_last_success = -math.inf


@task_prerun.connect
def _database_connections_as_per_request(**kwargs: object) -> None:
    """Before each task, what Django does before each request: drop an old or broken one."""
    from django.db import close_old_connections, connections

    close_old_connections()
    if time.monotonic() - _last_success < HEALTH_CHECK_AFTER_IDLE:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None and not connection.errors_occurred:
                connection.health_check_done = True


@task_success.connect
def _database_connections_served(**kwargs: object) -> None:
    global _last_success
    _last_success = time.monotonic()
