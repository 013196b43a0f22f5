"""Dashboards: read-only summaries of the alliance, an institution, a problem and a run.

Each module holds the selectors of one dashboard (plain, typed values computed in a fixed
number of queries, whatever the size of the data) and its views stay thin.
"""

# Ids and numbers start at 1; larger values cannot name a row of a signed 64-bit column.
_CURSOR_MAX = 2**63


def parse_cursor(raw: str | None) -> int | None:
    """A keyset cursor from a query string: None when absent, ValueError unless a positive integer.

    ASCII digits only: ``str.isdigit`` also admits characters such as "²" that ``int`` refuses.
    """
    if raw is None or raw == "":
        return None
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < _CURSOR_MAX:
        return int(raw)
    raise ValueError(raw)
