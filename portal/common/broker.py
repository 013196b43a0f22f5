"""The embedded default's file-system broker, with messages that appear whole.

kombu's file-system transport creates a message file under its final name and then writes
it; a worker polling in another process can take the file while it is still empty, fail to
parse it and stop. Here a message is written under a name no reader looks for and renamed
into place, which is atomic on one file system.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
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
