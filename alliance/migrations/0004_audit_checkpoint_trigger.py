"""Any UPDATE or DELETE of an audit event row clears the audit checkpoint.

The ORM already refuses to change audit events, but someone with database access can run raw
SQL. The checkpoint lets the chain badge skip re-hashing events it verified before, so it must
not outlive a change to any of them: this trigger, run by the database itself in the same
transaction as the change, deletes the checkpoint, and the next check starts from the genesis
and names the altered or missing event. INSERT needs no trigger: sequence numbers are unique
and start at 1 (a check constraint, migration 0003), so a new row can only come after the
checkpoint, and those are always verified. PostgreSQL also clears it on TRUNCATE.

On SQLite, a later migration that rebuilds the audit event table (adding a constraint, altering
a column) drops these triggers with the old table and must create them again; the explorer's
tamper tests fail if it does not.
"""

from django.db import migrations

POSTGRESQL_FORWARDS = [
    """
    CREATE OR REPLACE FUNCTION alliance_audit_checkpoint_clear() RETURNS trigger AS $$
    BEGIN
        DELETE FROM alliance_auditcheckpoint;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER alliance_auditevent_clears_checkpoint
    AFTER UPDATE OR DELETE OR TRUNCATE ON alliance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION alliance_audit_checkpoint_clear()
    """,
]
POSTGRESQL_BACKWARDS = [
    "DROP TRIGGER IF EXISTS alliance_auditevent_clears_checkpoint ON alliance_auditevent",
    "DROP FUNCTION IF EXISTS alliance_audit_checkpoint_clear()",
]
SQLITE_FORWARDS = [
    """
    CREATE TRIGGER alliance_auditevent_update_clears_checkpoint
    AFTER UPDATE ON alliance_auditevent
    BEGIN DELETE FROM alliance_auditcheckpoint; END
    """,
    """
    CREATE TRIGGER alliance_auditevent_delete_clears_checkpoint
    AFTER DELETE ON alliance_auditevent
    BEGIN DELETE FROM alliance_auditcheckpoint; END
    """,
]
SQLITE_BACKWARDS = [
    "DROP TRIGGER IF EXISTS alliance_auditevent_update_clears_checkpoint",
    "DROP TRIGGER IF EXISTS alliance_auditevent_delete_clears_checkpoint",
]


def _run(schema_editor, statements_by_vendor: dict[str, list[str]]) -> None:
    statements = statements_by_vendor.get(schema_editor.connection.vendor)
    if statements is None:
        raise RuntimeError(
            f"No audit checkpoint trigger for {schema_editor.connection.vendor}; "
            "the chain badge would not notice altered events."
        )
    for statement in statements:
        schema_editor.execute(statement)


def forwards(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRESQL_FORWARDS, "sqlite": SQLITE_FORWARDS})


def backwards(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRESQL_BACKWARDS, "sqlite": SQLITE_BACKWARDS})


class Migration(migrations.Migration):
    dependencies = [("alliance", "0003_audit_checkpoint_and_explorer_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
