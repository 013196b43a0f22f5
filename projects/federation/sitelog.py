"""A site's own record of what its worker did: one JSON line per task, each chained to the last.

Every line holds ``prev``, the SHA-256 of the previous line's bytes (64 zeros for the first), so
a line removed, inserted or edited breaks every link after it. The log lives in the site's own
folder and never leaves it: a hospital shows it to its auditors without the portal.

Plain Python, no Django: the site worker writes it, ``manage.py site_log_verify`` (or any
script) checks it.
"""

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The file's last non-empty line, read from the end (logs grow without bound)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        block = b""
        position = end
        while position > 0:
            step = min(4096, position)
            position -= step
            handle.seek(position)
            block = handle.read(step) + block
            lines = [line for line in block.split(b"\n") if line]
            if len(lines) > 1 or (lines and position == 0):
                return lines[-1]
    return None


class SiteLog:
    """An append-only, hash-chained JSON-lines file; safe for the threads of one worker."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._prev: str | None = None

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``entry`` with the link to the previous line; return what was written."""
        with self._lock:
            if self._prev is None:
                last = _last_line(self.path) if self.path.exists() else None
                self._prev = GENESIS if last is None else line_hash(last)
            record = {**entry, "prev": self._prev}
            line = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            data = line.encode("ascii")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                handle.write(data + b"\n")
                handle.flush()
            self._prev = line_hash(data)
            return record


@dataclass(frozen=True)
class LogCheck:
    ok: bool
    lines: int
    first_bad_line: int | None = None
    reason: str = ""


def verify_log(path: Path) -> LogCheck:
    """Recompute every link of the log; the first line (counted from 1) that breaks it."""
    prev = GENESIS
    count = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                return LogCheck(False, count, number, "not JSON")
            if not isinstance(record, dict) or record.get("prev") != prev:
                return LogCheck(False, count, number, "does not follow the line before it")
            prev = line_hash(line)
            count += 1
    return LogCheck(True, count)
