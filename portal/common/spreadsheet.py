"""CSV that is safe to open in a spreadsheet (OWASP's advice against CSV/formula injection).

A spreadsheet treats a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a formula, and a
leading tab or carriage return can hide such a start; text from anyone (an applicant's
institution name, an agreement's title) can reach an export. Every text cell that begins with
one of these characters is written with a leading apostrophe, which spreadsheets show as text
and do not evaluate. Numbers are written as they are. Every CSV the portal writes goes through
``safe_row``.
"""

from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value, with an apostrophe before it when it is text that begins like a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in values]
