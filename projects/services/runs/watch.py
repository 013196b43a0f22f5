"""Following a run as it trains: told when it changes, instead of asking again and again.

Whatever changes what a follower shows (a round opens or closes, the run ends or is cancelled)
calls ``run_changed`` inside the transaction that makes the change. A follower (``launch_run
--wait``, the run page's live part) holds a ``RunWatcher`` and waits on it between reads.

- On PostgreSQL the change is a ``NOTIFY`` on one channel with the run's id: the server delivers
  it when, and only if, the transaction commits, and a watcher ``LISTEN``s on its own
  connection and sleeps in ``select()`` on that socket until a notification or its timeout.
- Elsewhere (the embedded SQLite default, one machine) the change touches a small file under
  ``VAR_DIR/run-changes`` after commit, and a watcher checks that file's size every few
  milliseconds: a ``stat`` and no database read.

A watcher starts listening when it is made, so a follower that makes it first and then reads
the run misses nothing: a change after the read wakes it, a change before is in the read.
"""

import contextlib
import select
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import connection, transaction

CHANNEL = "portal_run_changed"
# A file watcher's check interval: the embedded default's broker polls its folder every 20 ms.
FILE_CHECK_SECONDS = 0.005


def _changes_dir() -> Path:
    return Path(settings.VAR_DIR) / "run-changes"


def _touch(run_id: int) -> None:
    folder = _changes_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # One byte appended per change: the size grows, whatever the clock's resolution.
    with open(folder / str(run_id), "ab") as handle:
        handle.write(b".")


def run_changed(run_id: int) -> None:
    """Tell the run's followers, once the current transaction commits, that the run changed."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(run_id)])
    else:
        transaction.on_commit(lambda: _touch(run_id))


class RunWatcher:
    """Waits until a run changes (``wait``); a context manager that closes what it opened."""

    def __init__(self) -> None:
        self._connection: Any = None
        self._sizes: dict[int, int] = {}
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            raw = connection.get_new_connection(connection.get_connection_params())
            raw.autocommit = True
            with raw.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self._connection = raw

    def _size(self, run_id: int) -> int:
        try:
            return (_changes_dir() / str(run_id)).stat().st_size
        except FileNotFoundError:
            return 0

    def watch(self, run_id: int) -> None:
        """Start following ``run_id`` (on PostgreSQL every run is followed from the start)."""
        if self._connection is None:
            self._sizes.setdefault(run_id, self._size(run_id))

    def wait(self, run_id: int, timeout: float) -> bool:
        """Until ``run_id`` changes (True) or ``timeout`` seconds pass (False)."""
        limit = time.monotonic() + timeout
        if self._connection is None:
            self.watch(run_id)
            while True:
                size = self._size(run_id)
                if size != self._sizes[run_id]:
                    self._sizes[run_id] = size
                    return True
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(FILE_CHECK_SECONDS, left))
        raw = self._connection
        wanted = str(run_id)
        while True:
            raw.poll()
            found = False
            while raw.notifies:
                if raw.notifies.pop(0).payload == wanted:
                    found = True
            if found:
                return True
            left = limit - time.monotonic()
            if left <= 0:
                return False
            select.select([raw], [], [], left)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def __enter__(self) -> "RunWatcher":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
