"""The production web server's settings: ``gunicorn -c portal/gunicorn_config.py portal.wsgi``.

Sized for the alliance's reference machine (2 cores) and overridable from the environment:

- ``WEB_CONCURRENCY`` worker processes (default: one per core plus one, here 3). A request is
  mostly Python work (templates, serializers) that holds its process's interpreter lock, so
  processes, not threads, spread it over the cores; the extra one keeps both cores busy while
  another process waits on PostgreSQL.
- ``GUNICORN_THREADS`` threads per worker (default 4): a thread waiting on the database lets
  another run, and 3 x 4 = 12 requests in hand cover the 8 concurrent requests the portal is
  sized for without queueing at the socket. More processes would only add memory (each holds the
  whole application, ~100 MB) and contend for the same two cores.
- ``GUNICORN_BIND`` (default ``0.0.0.0:8000``); keep-alive 5 s behind a proxy.

``make bench`` (``bench/load.py``) measures the pages and API lists under this configuration.
"""

import os

_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", _cores + 1))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", 4))
keepalive = 5
timeout = 60
graceful_timeout = 30
# Each worker imports the application itself: a code reload needs no full restart.
preload_app = False
