"""The set-up the dashboards, load and audit benches share: a throwaway state directory and
database, migrated and filled by ``manage.py seed_bench``, and this process set up to read it.

With DATABASE_URL (PostgreSQL) a database ``bench_<pid>`` is created on that server and dropped
at the end (``federation.throwaway_database`` / ``release_database``); without it, the portal
runs on its own SQLite file in the temporary directory, where a bench allows it. The directory
is removed at the end, or kept (and said so) with ``keep`` or after a failure.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A sibling script, not a package: the benches put this directory on the path.
from federation import (
    manage,
    portal_env,
    release_database,
    say,
    scheme,
    setup_django,
    throwaway_database,
    with_database,
)


def database_kind() -> str:
    """``postgresql``, ``sqlite`` (no DATABASE_URL) or the scheme of another server."""
    return scheme(os.environ.get("DATABASE_URL") or None, "sqlite")


@dataclass
class Seeded:
    """Where the seeded portal lives, and what seeding it said and took."""

    db: str
    tmp: Path
    env: dict[str, str]
    seed_output: list[str] = field(default_factory=list)
    seed_seconds: float = 0.0


def seed_args(*, institutions: int, rounds: int, events: int, seed: int | None = None) -> list[str]:
    """``seed_bench``'s arguments for an alliance of that size."""
    args = ["--institutions", str(institutions), "--rounds", str(rounds), "--events", str(events)]
    return [*args, "--seed", str(seed)] if seed is not None else args


@contextmanager
def seeded_alliance(
    prefix: str,
    machine: dict[str, Any],
    seeding: list[str],
    *,
    keep: bool = False,
    database: str | None = None,
) -> Iterator[Seeded]:
    """A migrated, seeded portal for the ``with`` block, this process set up on it.

    ``database`` names an already seeded database on DATABASE_URL's server instead: it is
    used as it is, neither seeded nor dropped. The server's version goes into ``machine``.
    Call ``database_kind`` first: only PostgreSQL and SQLite are handled here.
    """
    admin_url = os.environ.get("DATABASE_URL") or None
    db = database_kind()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    bench_db = f"bench_{os.getpid()}"
    created = False
    failed = True
    try:
        database_url = None
        if db == "postgresql" and admin_url:
            if database:
                database_url = with_database(admin_url, database)
            else:
                database_url = throwaway_database(admin_url, bench_db, machine)
                created = True
        state = Seeded(db=db, tmp=tmp, env=portal_env(tmp / "state", database_url, None))
        if not database:
            say(f"Migrating and seeding in {tmp} ...")
            started = time.monotonic()
            manage(state.env, "migrate", "--no-input", "-v", "0")
            output = manage(state.env, "seed_bench", *seeding, timeout=900)
            state.seed_seconds = round(time.monotonic() - started, 1)
            state.seed_output = output.splitlines()
            say(state.seed_output[-1] if state.seed_output else "")
        setup_django(state.env)
        yield state
        failed = False
    finally:
        release_database(admin_url, bench_db, created)
        if keep or failed:
            say(f"State kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
