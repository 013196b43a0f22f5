"""Build a test setup once per session, put it back before each test in one statement.

The governance scenario (three hospitals, their people, a problem taken to data ready through
the real services) costs about 550 queries; hundreds of tests start from it. ``Snapshot.take``
runs the setup once inside a transaction that is rolled back and keeps every row it added, as
JSON per table. ``restore`` inserts those rows back (``json_populate_recordset``) in the test's
own transaction, which pytest-django rolls back after the test, and moves each table's id
sequence past them: one statement, a few milliseconds. Foreign keys are deferred to the end of
the transaction, so the order of tables does not matter. What the setup leaves outside the
database is not kept: the builders used with it must only write rows (emails and tasks wait
for a commit that never comes in these tests, so there are none).

PostgreSQL only: elsewhere (the embedded default's SQLite) ``available()`` is false and the
fixtures build the setup per test as before.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.test.utils import override_settings


def available() -> bool:
    # TEST_SNAPSHOTS=0 builds every setup per test, as without snapshots (to compare, or to
    # rule them out when a test behaves oddly).
    return connection.vendor == "postgresql" and os.environ.get("TEST_SNAPSHOTS", "1") != "0"


def _tables() -> list[tuple[str, str]]:
    """(table, primary key column) of every model table."""
    from django.apps import apps

    tables = {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.managed and not model._meta.proxy:
            tables[model._meta.db_table] = model._meta.pk.column
    return sorted(tables.items())


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _base() -> str:
    """The rows every snapshot refers to but does not hold: content types and permissions.

    A transactional test empties every table and recreates these with new ids; a snapshot
    taken before then no longer fits and is taken again."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT md5(COALESCE(string_agg(concat_ws(':', c.id, c.app_label, c.model, p.id,"
            " p.codename), ',' ORDER BY c.id, p.id), '')) FROM django_content_type c"
            " LEFT JOIN auth_permission p ON p.content_type_id = c.id"
        )
        return cursor.fetchone()[0]


@dataclass
class Snapshot:
    """The rows a setup added, per table, as JSON, and the statement that puts them back."""

    statement: str = ""
    params: list[str] = field(default_factory=list)
    base: str = ""

    def fits(self) -> bool:
        return self.base == _base()

    @classmethod
    def take(cls, build: Callable[[], Any]) -> tuple["Snapshot", Any]:
        """Run ``build`` in a transaction that is rolled back; return the rows it added and
        what it returned (which must not be used as model instances: they are gone)."""
        snapshot = cls()
        tables = _tables()
        # Tests hash passwords with MD5 (tests/conftest.py); the stored hashes must match.
        hashers = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        with override_settings(PASSWORD_HASHERS=hashers), transaction.atomic():
            snapshot.base = _base()
            with connection.cursor() as cursor:
                before = {}
                for table, pk in tables:
                    cursor.execute(f"SELECT {_quote(pk)} FROM {_quote(table)}")
                    before[table] = [row[0] for row in cursor.fetchall()]
                result = build()
                inserts, sequences = [], []
                for table, pk in tables:
                    where = f"WHERE NOT ({_quote(pk)} = ANY(%s))" if before[table] else ""
                    cursor.execute(
                        f"SELECT json_agg(t) FROM {_quote(table)} t {where}",
                        [before[table]] if before[table] else None,
                    )
                    (rows,) = cursor.fetchone()
                    if rows is None:
                        continue
                    snapshot.params.append(rows if isinstance(rows, str) else _json(rows))
                    inserts.append(
                        f"INSERT INTO {_quote(table)} SELECT * FROM"
                        f" json_populate_recordset(NULL::{_quote(table)}, %s::json)"
                    )
                    cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [_quote(table), pk])
                    (sequence,) = cursor.fetchone()
                    if sequence is not None:
                        sequences.append(
                            f"setval('{sequence}', GREATEST((SELECT MAX({_quote(pk)}) FROM"
                            f" {_quote(table)}), (SELECT last_value FROM {sequence})))"
                        )
            transaction.set_rollback(True)
        # Foreign keys wait for the end of the transaction; one round trip puts it all back.
        parts = ["SET CONSTRAINTS ALL DEFERRED", *inserts]
        if sequences:
            parts.append("SELECT " + ", ".join(sequences))
        snapshot.statement = ";\n".join(parts)
        return snapshot, result

    def restore(self) -> None:
        """Put the rows back in the caller's transaction and move the id sequences on."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(self.statement, self.params)


def _json(rows: Any) -> str:
    import json

    return json.dumps(rows)
