"""/healthz: is the database reachable, is the broker reachable."""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    broker = Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=2,
    )
    with broker as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every part answers; 503 naming each part that does not, and why."""
    parts: dict[str, str] = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            parts[name] = check()
        except Exception as exc:  # a health check reports every failure, whatever its kind
            parts[name] = f"error: {exc.__class__.__name__}: {exc}"
    healthy = all(state == "ok" for state in parts.values())
    failing = [name for name, state in parts.items() if state != "ok"]
    body = {"status": "ok" if healthy else "failing", **parts}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=200 if healthy else 503)
