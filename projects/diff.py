"""The difference between two revisions of a problem's definition, as plain data.

Pure functions over ``ProblemRevision.definition()``: no database, no request. The revision
page shows the result side by side and the API returns it as JSON, so both say the same thing.
Every change that makes ``problem_revise`` write a new revision appears here, including a
column moved to another place in the schema (``columns["reordered"]``).
"""

from typing import Any

from django.utils.translation import gettext_lazy as _

from projects.models import ProblemRevision

# The scalar parts of a definition, in the order a reader checks them.
FIELDS = {
    "task_type": _("task type"),
    "label_column": _("label column"),
    "metric": _("evaluation metric"),
    "threshold": _("acceptance threshold"),
}
# The parts of a column spec (``projects.schema.FEATURE_KEYS`` without the name).
COLUMN_KEYS = {
    "type": _("type"),
    "unit": _("unit"),
    "min": _("minimum"),
    "max": _("maximum"),
    "categories": _("categories"),
    "required": _("required"),
}


def definition_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from definition ``old`` to ``new`` (both as ``ProblemRevision.definition``).

    Returns ``fields`` (``[{field, label, old, new}]`` for every scalar that changed),
    ``columns`` (``added`` and ``removed`` column specs, ``changed`` as
    ``[{name, changes: [{key, label, old, new}]}]`` and ``reordered``: whether the columns both
    revisions share come in another order), ``unchanged_columns`` (names) and ``changed``
    (whether anything at all differs).
    """
    fields = [
        {"field": name, "label": str(label), "old": old.get(name), "new": new.get(name)}
        for name, label in FIELDS.items()
        if old.get(name) != new.get(name)
    ]
    old_columns = {column["name"]: column for column in old.get("features") or []}
    new_columns = {column["name"]: column for column in new.get("features") or []}
    added = [column for name, column in new_columns.items() if name not in old_columns]
    removed = [column for name, column in old_columns.items() if name not in new_columns]
    changed: list[dict[str, Any]] = []
    unchanged: list[str] = []
    for name, column in new_columns.items():
        before = old_columns.get(name)
        if before is None:
            continue
        changes = [
            {"key": key, "label": str(label), "old": before.get(key), "new": column.get(key)}
            for key, label in COLUMN_KEYS.items()
            if before.get(key) != column.get(key)
        ]
        if changes:
            changed.append({"name": name, "changes": changes})
        else:
            unchanged.append(name)
    shared_old = [name for name in old_columns if name in new_columns]
    shared_new = [name for name in new_columns if name in old_columns]
    reordered = shared_old != shared_new
    return {
        "fields": fields,
        "columns": {
            "added": added,
            "removed": removed,
            "changed": changed,
            "reordered": reordered,
        },
        "unchanged_columns": unchanged,
        "changed": bool(fields or added or removed or changed or reordered),
    }


def revision_diff(old: ProblemRevision, new: ProblemRevision) -> dict[str, Any]:
    """``definition_diff`` of two revisions of the same problem, with their numbers.

    ``from`` and ``to`` are the revision numbers; ``change_note`` is what the author of ``new``
    wrote about it.
    """
    return {
        "from": old.number,
        "to": new.number,
        "change_note": new.change_note,
        **definition_diff(old.definition(), new.definition()),
    }
