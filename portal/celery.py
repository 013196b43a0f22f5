"""The Celery application shared by the web process, the coordinator and the site workers."""

import os

from celery import Celery
from celery.signals import task_prerun
from kombu.transport import TRANSPORT_ALIASES

# "filesystem://" (the embedded default) takes the transport that writes messages atomically.
TRANSPORT_ALIASES["filesystem"] = "portal.common.broker:Transport"
# Redis, with a worker that goes on consuming when an acknowledgement fails as Redis dies.
TRANSPORT_ALIASES["redis"] = "portal.common.broker:RedisTransport"
TRANSPORT_ALIASES["rediss"] = "portal.common.broker:RedisTransport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _database_connections_as_per_request(**kwargs: object) -> None:
    """Before each task, what Django does before each request: drop an old or broken one."""
    from django.db import close_old_connections

    close_old_connections()
