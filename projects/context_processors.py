"""What every page needs from the projects app: the person's pending actions, read lazily."""

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from projects.selectors import InboxItem, inbox_for


def pending_items(request: HttpRequest) -> list[InboxItem]:
    """The person's inbox, computed at most once per request (nav badge, dashboard, inbox)."""
    items = getattr(request, "_pending_items", None)
    if items is None:
        items = inbox_for(request.user)
        request._pending_items = items  # type: ignore[attr-defined]
    return items


def inbox(request: HttpRequest) -> dict[str, Any]:
    """``my_inbox``: the pending items, queried only when a template reads them.

    Staff without a membership and visitors have no inbox; pages that do not show it (the
    print view, error pages) cost nothing.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"my_inbox": SimpleLazyObject(lambda: pending_items(request))}
