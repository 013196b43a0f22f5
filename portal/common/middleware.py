"""Requests refused before any view runs (see ``portal.common.inputs``)."""

from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils import translation

from portal.common.inputs import UnsafeInput, check_strings, nul_message

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _request_strings(request: HttpRequest) -> Iterator[str]:
    """Every string a view could read from the request: path, query, form, cookies, headers."""
    yield request.path
    yield request.path_info
    for key, values in request.GET.lists():
        yield key
        yield from values
    for key, value in request.COOKIES.items():
        yield key
        yield value
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            yield value
    if request.method == "POST" and request.content_type in FORM_TYPES:
        try:
            form = request.POST
        except Exception:  # a malformed body: the view's own parsing answers it with a 400
            return
        for key, values in form.lists():
            yield key
            yield from (v for v in values if isinstance(v, str))


class RejectNulBytesMiddleware:
    """A NUL character anywhere a view could read it answers 400, in the client's language.

    PostgreSQL cannot compare or store text with a NUL, so such a value reaching a query would
    be a server error; no legitimate client sends one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            check_strings(_request_strings(request))
        except UnsafeInput:
            return self._refuse(request)
        return self.get_response(request)

    def _refuse(self, request: HttpRequest) -> HttpResponse:
        language = translation.get_language_from_request(request)
        with translation.override(language):
            message = nul_message()
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
