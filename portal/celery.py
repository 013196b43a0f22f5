"""The Celery application shared by the web process, the coordinator and the site workers."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# "filesystem://" (the embedded default) takes the transport that writes messages atomically.
TRANSPORT_ALIASES["filesystem"] = "portal.common.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
