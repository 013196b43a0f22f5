"""The API's body parsers: DRF's own, refusing NUL characters and over-deep JSON with a 400."""

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from portal.common.inputs import UnsafeInput, check_data, check_strings, depth_message, max_depth


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:  # the standard parser recurses once per level
            raise ParseError(depth_message(max_depth())) from exc
        try:
            check_data(data)
        except UnsafeInput as exc:
            raise ParseError(str(exc)) from exc
        return data


def _check_query_dict(data: Any) -> None:
    try:
        for key, values in data.lists():
            check_strings([key, *(v for v in values if isinstance(v, str))])
    except UnsafeInput as exc:
        raise ParseError(str(exc)) from exc


class FormParser(parsers.FormParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _check_query_dict(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        result = super().parse(stream, media_type, parser_context)
        _check_query_dict(result.data)
        try:
            check_strings(f.name or "" for f in result.files.values())
        except UnsafeInput as exc:
            raise ParseError(str(exc)) from exc
        return result
