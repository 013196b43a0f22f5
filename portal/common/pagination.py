"""How the API pages its lists: every list is paged, and no page is larger than ``MAX_PAGE_SIZE``.

Most lists are small and change little (problems, people, revisions): they are paged by number
(``?page=2``) and say how many there are (``count``). The lists that grow without bound (a run's
rounds, its sites' answers and its models, the audit trail) are paged by an opaque cursor
(``?cursor=...``): the next page costs the same however deep it is (no OFFSET, no COUNT over the
whole table), and a page does not shift when rows are added while a client walks through them.

Either way the page's rows are under ``results`` and ``next`` is the URL of the next page (null on
the last); ``?page_size=N`` asks for another size, capped at ``MAX_PAGE_SIZE``.
"""

from typing import Any

from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_lazy
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.response import Response

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


# A run's rounds come a smaller page at a time: each round carries every site's answer, so a
# page of rounds is already that many rows times the sites (and costs as much to write).
ROUND_PAGE_SIZE = 20


def _page_size_help(default: int = PAGE_SIZE) -> str:
    return gettext("Rows per page: %(default)s unless asked, at most %(ceiling)s.") % {
        "default": default,
        "ceiling": MAX_PAGE_SIZE,
    }


PAGE_SIZE_HELP = lazy(_page_size_help, str)()


class PagePagination(PageNumberPagination):
    """Numbered pages with a total count: the default for the API's small lists."""

    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    page_size_query_description = PAGE_SIZE_HELP


class SeqCursorPagination(CursorPagination):
    """Cursor pages in a fixed order on one unique, never-changing column (``ordering``)."""

    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    page_size_query_description = PAGE_SIZE_HELP
    cursor_query_description = gettext_lazy(
        "Where the page starts: copy it from the previous page's next or previous link."
    )
    ordering = "pk"

    def get_paginated_response(self, data: Any, extra: dict[str, Any] | None = None) -> Response:
        return Response({**(extra or {}), **super().get_paginated_response(data).data})


def cursor_pagination(ordering: str, name: str) -> type[SeqCursorPagination]:
    """A cursor pagination class over ``ordering`` (e.g. ``"-seq"``, ``"number"``)."""
    return type(name, (SeqCursorPagination,), {"ordering": ordering})


AuditCursorPagination = cursor_pagination("-seq", "AuditCursorPagination")


class RoundCursorPagination(SeqCursorPagination):
    """A run's rounds, oldest first, ``ROUND_PAGE_SIZE`` to a page unless asked."""

    ordering = "number"
    page_size = ROUND_PAGE_SIZE
    page_size_query_description = lazy(_page_size_help, str)(ROUND_PAGE_SIZE)


class ModelCursorPagination(SeqCursorPagination):
    """A run's model versions by round, with whether the caller may download them."""

    ordering = "round_number"

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paged = super().get_paginated_response_schema(schema)
        paged["required"] = ["may_download", "download_refusal", *paged.get("required", [])]
        paged["properties"] = {
            "may_download": {
                "type": "boolean",
                "description": gettext_lazy(
                    "Whether the run's agreement lets you download these models."
                ),
            },
            "download_refusal": {
                "type": "string",
                "nullable": True,
                "description": gettext_lazy("Why not, in the agreement's terms; null if so."),
            },
            **paged["properties"],
        }
        return paged


SiteRoundCursorPagination = cursor_pagination("pk", "SiteRoundCursorPagination")
