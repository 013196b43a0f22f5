"""A test run split over processes (``pytest -n 2``) gives each process its own broker and folders.

Loaded with ``-p tests.xdist_broker`` before Django reads its settings: in the second and later
worker processes it moves ``CELERY_BROKER_URL`` to the next Redis database (``/13`` → ``/14``)
and suffixes ``BROKER_FOLDER`` and ``PORTAL_VAR_DIR``, so that one process's Celery workers never
take another's tasks. The database is pytest-django's per-worker test database. The first
process and a run that is not split keep the environment as it is.
"""

import os
from urllib.parse import urlsplit, urlunsplit

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _shift(url: str, by: int) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    db = int(parts.path.strip("/") or 0) + by
    return urlunsplit(parts._replace(path=f"/{db}"))


if WORKER.startswith("gw") and WORKER[2:].isdigit() and int(WORKER[2:]) > 0:
    index = int(WORKER[2:])
    if os.environ.get("CELERY_BROKER_URL"):
        os.environ["CELERY_BROKER_URL"] = _shift(os.environ["CELERY_BROKER_URL"], index)
    for name in ("BROKER_FOLDER", "PORTAL_VAR_DIR"):
        if os.environ.get(name):
            os.environ[name] = f"{os.environ[name].rstrip('/')}-{WORKER}"
