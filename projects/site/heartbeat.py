"""A site worker's signed heartbeats: "alive, running this version", every 30 s by default.

Every ``SITE_HEARTBEAT_SECONDS``, one daemon thread per worker process sends a ``Heartbeat`` for
each institution the worker serves, signed with that institution's key, to the coordinator's
queue. The portal shows the last one on the institution, problem and launch pages, and warns
when a contributor falls silent.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings

from projects.federation.protocol import Envelope, Heartbeat
from projects.site.identity import site_identities

logger = logging.getLogger(__name__)


def heartbeats(slugs: Iterable[str] | None = None) -> list[Envelope[Heartbeat]]:
    """A signed heartbeat for each institution served (or each of ``slugs`` that is)."""
    now = time.time()
    wanted = None if slugs is None else set(slugs)
    return [
        Envelope.seal(Heartbeat(site=slug, kid=identity.kid, sent_at=now), identity.key)
        for slug, identity in site_identities().items()
        if wanted is None or slug in wanted
    ]


class HeartbeatThread(threading.Thread):
    """Sends heartbeats until stopped; a failure to send is logged and tried again next time."""

    def __init__(self, send: Callable[[dict], None], slugs: Iterable[str]) -> None:
        super().__init__(name="site-heartbeat", daemon=True)
        self.send = send
        self.slugs = list(slugs)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                for envelope in heartbeats(self.slugs):
                    self.send(envelope.to_wire())
            except Exception:  # the broker may be away for a while; the next beat tries again
                logger.warning("Could not send a heartbeat; trying again.", exc_info=True)
            self.stopped.wait(settings.SITE_HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self.stopped.set()
