"""On Redis, a channel keeps one client for its commands instead of making one per command."""

import pytest
from django.conf import settings

from portal.celery import app

pytestmark = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis"), reason="the broker is not Redis"
)


def test_a_channel_makes_one_client_for_its_commands():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        first.ping()


def test_a_channel_with_a_new_pool_makes_a_new_client():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        first = channel._create_client()
        channel._pool = None  # what the channel does after a connection error
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        second.ping()
