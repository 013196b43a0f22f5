"""Domain errors raised by services.

Services never return HTTP objects. They raise these (or Django's ``ValidationError`` and
``PermissionDenied``); pages turn them into form errors and messages, and the API's exception
handler turns them into JSON 4xx answers.
"""

from typing import Any


class ApplicationError(Exception):
    """A request that the domain refuses, with a message meant for the person who made it."""

    status_code = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class Conflict(ApplicationError):
    """The request clashes with the current state (already decided, already exists)."""

    status_code = 409


def error_text(exc: Exception) -> str:
    """The message a person should read for a refusal: domain, validation or permission error."""
    if isinstance(exc, ApplicationError):
        return exc.message
    messages = getattr(exc, "messages", None)  # django.core.exceptions.ValidationError
    if messages:
        return " ".join(str(m) for m in messages)
    return str(exc)
