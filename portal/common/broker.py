"""The brokers' transports: the embedded default's file system, with messages that appear
whole, and Redis, without a new client object for every command.

kombu's file-system transport creates a message file under its final name and then writes
it; a worker polling in another process can take the file while it is still empty, fail to
parse it and stop. Here a message is written under a name no reader looks for and renamed
into place, which is atomic on one file system.
"""

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Readers take only "<stamp>_<uuid>.<queue>.msg"; "part-<uuid>.tmp" matches no queue.
        partial = os.path.join(self.data_folder_out, f"part-{uuid.uuid4()}.tmp")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


class RedisChannel(redis.Channel):
    """kombu's Redis channel, keeping one client for its synchronous commands.

    kombu makes a new ``redis.Redis`` object for every publish, acknowledgement and
    bookkeeping pipeline (its constructor builds a table of ~170 reply callbacks), about a
    quarter of a millisecond of CPU each, several times per task. The client holds no connection
    of its own: it borrows from the channel's pool, which reconnects after a Redis restart. When
    the channel replaces its pool (after a connection error), a new client is made for the new
    pool.
    """

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class RedisTransport(redis.Transport):
    Channel = RedisChannel
