"""A round's tasks reach the sites' queues in one batch: on Redis, one pipeline."""

import uuid
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings

from portal.celery import app
from projects.services.runs import dispatch

pytestmark = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis"), reason="the broker is not Redis"
)


class _Envelope:
    """Just what publishing reads of a signed envelope."""

    def __init__(self, site: str) -> None:
        self.body = SimpleNamespace(site=site)

    def to_wire(self) -> dict:
        return {"site": self.body.site}


def test_a_rounds_tasks_go_to_redis_in_one_pipeline(monkeypatch):
    slugs = [f"batch-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    sent = []
    real_execute = redis.client.Pipeline.execute
    real_lpush = redis.Redis.lpush

    def execute(self, *args, **kwargs):
        sent.append([c[0][0] for c in self.command_stack])
        return real_execute(self, *args, **kwargs)

    def lpush(self, *args, **kwargs):
        if not isinstance(self, redis.client.Pipeline):  # a round trip of its own
            sent.append(["LPUSH"])
        return real_lpush(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.Redis, "lpush", lpush)
    try:
        dispatch.publish([_Envelope(slug) for slug in slugs])
        assert [cmds for cmds in sent if "LPUSH" in cmds] == [["LPUSH", "LPUSH", "LPUSH"]]
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            assert [channel._size(f"site.{slug}") for slug in slugs] == [1, 1, 1]
    finally:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            for slug in slugs:
                channel.queue_purge(f"site.{slug}")
