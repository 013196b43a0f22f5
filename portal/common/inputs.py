"""What no request may carry into the portal: NUL characters, and JSON nested without end.

PostgreSQL cannot store a NUL character in text (psycopg2 refuses the whole query), and
Python's JSON parser recurses once per level of nesting, so either would surface as a server
error deep inside a view. They are refused at the edge instead, as a 400, by
``portal.common.middleware`` (path, query string, form fields, cookies, headers) and by the
API's parsers (``portal.common.parsers``: JSON, form and multipart bodies). The checks walk
the data with a stack of their own, so they never recurse either.
"""

import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

NUL = "\x00"

# The largest whole number a client may send where the portal stores or compares an integer:
# PostgreSQL's ``integer`` (Django's IntegerField and PositiveIntegerField). Serializers and
# forms bound every integer field by it (or tighter), so the database never sees a larger one.
INT_MAX = 2**31 - 1
# ``bigint`` (PositiveBigIntegerField: audit sequence numbers).
BIGINT_MAX = 2**63 - 1


class UnsafeInput(ValueError):
    """Input the portal refuses whatever the endpoint: the message says why."""


def nul_message() -> str:
    return _("The request contains a NUL character (\\u0000), which the portal does not accept.")


def depth_message(limit: int) -> str:
    return _("The JSON is nested more than %(limit)s levels deep.") % {"limit": limit}


def max_depth() -> int:
    return int(getattr(settings, "MAX_JSON_DEPTH", 32))


def check_strings(values: Iterable[str]) -> None:
    """UnsafeInput when any of these strings holds a NUL character."""
    for value in values:
        if NUL in value:
            raise UnsafeInput(nul_message())


def check_data(data: Any, *, limit: int | None = None) -> None:
    """UnsafeInput when parsed JSON holds a NUL in any key or string, or nests past ``limit``.

    Depth counts containers: ``1`` and ``"a"`` are depth 0, ``[1]`` and ``{"a": 1}`` depth 1.
    """
    limit = max_depth() if limit is None else limit
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                raise UnsafeInput(nul_message())
        elif isinstance(value, dict):
            if depth + 1 > limit:
                raise UnsafeInput(depth_message(limit))
            for key, item in value.items():
                if isinstance(key, str) and NUL in key:
                    raise UnsafeInput(nul_message())
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            if depth + 1 > limit:
                raise UnsafeInput(depth_message(limit))
            stack.extend((item, depth + 1) for item in value)


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses what ``check_data`` refuses; UnsafeInput or JSONDecodeError."""
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise UnsafeInput(depth_message(max_depth())) from exc
    check_data(data)
    return data
