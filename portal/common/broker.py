"""The brokers' transports, where kombu's own lose work or time.

The embedded default's file-system broker, with messages that appear whole: kombu's file-system
transport creates a message file under its final name and then writes it; a worker polling in
another process can take the file while it is still empty, fail to parse it and stop. Here a
message is written under a name no reader looks for and renamed into place, which is atomic on
one file system.

Redis, with a worker that goes on consuming after an acknowledgement fails: kombu keeps each
delivered message in the channel's prefetch window until its acknowledgement reaches Redis. When
Redis dies just as a task finishes ("Couldn't ack"), the acknowledgement raises before the
window is freed; with one message in flight (acks late, prefetch 1) the window stays full, the
worker never asks Redis for another message, and its queue fills while it looks alive. Here the
window is freed whether or not Redis took the acknowledgement: if Redis kept the message (a
blip), it is delivered again after the visibility timeout, which every task here tolerates (a
round's task and answer are idempotent); if Redis restarted empty, there is nothing to redeliver.
And Redis without a new client object for every command (see RedisChannel).
"""

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.transport.virtual import base as virtual
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


class RedisQoS(redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        finally:
            # Out of the prefetch window even when Redis did not take it (see above).
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)


class RedisChannel(redis.Channel):
    """kombu's Redis channel, keeping one client for its synchronous commands.

    kombu makes a new ``redis.Redis`` object for every publish, acknowledgement and
    bookkeeping pipeline (its constructor builds a table of ~170 reply callbacks), about a
    quarter of a millisecond of CPU each, several times per task. The client holds no connection
    of its own: it borrows from the channel's pool, which reconnects after a Redis restart. When
    the channel replaces its pool (after a connection error), a new client is made for the new
    pool.
    """

    QoS = RedisQoS
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
