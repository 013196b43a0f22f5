"""The difference between two revisions of a problem's definition, or between two versions of
its data-use agreement, as plain data.

Pure functions over ``ProblemRevision.definition()`` and ``AgreementVersion.terms()``: no
database, no request. The pages show the result side by side and the API returns it as JSON, so
both say the same thing. Every change that makes ``problem_revise`` write a new revision
appears here, including a column moved to another place in the schema
(``columns["reordered"]``); every term a steward approves appears in an agreement's.
"""

import difflib
import re
from typing import Any

from django.utils.translation import gettext_lazy as _

from projects.models import AgreementVersion, ProblemRevision

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


# The terms of an agreement (``TERM_FIELDS``), in the order its document states them.
TERMS = {
    "purpose": _("purpose"),
    "model_families": _("permitted model families"),
    "min_contributors": _("minimum contributors per round"),
    "secure_aggregation": _("secure aggregation required"),
    "dp_max_epsilon": _("differential-privacy ceiling (maximum epsilon)"),
    "download_scope": _("who may download trained models"),
    "commercial_use": _("commercial use allowed"),
    "revenue_sharing": _("revenue sharing"),
    "expires_on": _("expires on"),
    "clauses": _("further clauses"),
    "max_l2": _("strongest L2 regularisation a run may use"),
    "max_validation_share": _("largest share of its rows a site keeps for validation"),
    "feature_scalings": _("permitted feature scalings"),
}


def changed_fields(
    old: dict[str, Any], new: dict[str, Any], labels: dict[str, Any]
) -> list[dict[str, Any]]:
    """``[{field, label, old, new}]`` for every key of ``labels`` whose value differs."""
    return [
        {"field": name, "label": str(label), "old": old.get(name), "new": new.get(name)}
        for name, label in labels.items()
        if old.get(name) != new.get(name)
    ]


def definition_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from definition ``old`` to ``new`` (both as ``ProblemRevision.definition``).

    Returns ``fields`` (``[{field, label, old, new}]`` for every scalar that changed),
    ``columns`` (``added`` and ``removed`` column specs, ``changed`` as
    ``[{name, changes: [{key, label, old, new}]}]`` and ``reordered``: whether the columns both
    revisions share come in another order), ``unchanged_columns`` (names) and ``changed``
    (whether anything at all differs).
    """
    fields = changed_fields(old, new, FIELDS)
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


def terms_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from agreement terms ``old`` to ``new`` (both as ``AgreementVersion.terms``).

    Returns ``fields`` (``[{field, label, old, new}]`` for every term that changed, in the
    document's order), ``unchanged`` (the other terms' names) and ``changed``.
    """
    fields = changed_fields(old, new, TERMS)
    changed = {f["field"] for f in fields}
    return {
        "fields": fields,
        "unchanged": [name for name in TERMS if name not in changed],
        "changed": bool(fields),
    }


def agreement_diff(old: AgreementVersion, new: AgreementVersion) -> dict[str, Any]:
    """``terms_diff`` of two versions of one problem's agreement, with their numbers.

    ``from`` and ``to`` are the version numbers; ``change_note`` is what the author of ``new``
    wrote about it.
    """
    return {
        "from": old.number,
        "to": new.number,
        "change_note": new.change_note,
        **terms_diff(old.terms(), new.terms()),
    }


def word_changes(old: str, new: str) -> list[tuple[str, str]]:
    """Two texts as ``(kind, text)`` pieces, word by word: ``equal``, ``delete`` or ``insert``.

    Read in order, the ``equal`` and ``delete`` pieces give ``old`` and the ``equal`` and
    ``insert`` pieces give ``new``; whitespace stays with the word before it.
    """
    before, after = re.findall(r"\S+\s*|\s+", old), re.findall(r"\S+\s*|\s+", new)
    pieces: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pieces.append(("equal", "".join(before[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(("delete", "".join(before[i1:i2])))
        if j2 > j1:
            pieces.append(("insert", "".join(after[j1:j2])))
    return pieces
