"""Glue shared by the apps' page views: a service's refusal becomes a message or form errors."""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest

from portal.common.errors import ApplicationError, error_text

REFUSALS = (ApplicationError, PermissionDenied, ValidationError)


def attempt(request: HttpRequest, action: Callable[[], Any], success: str) -> bool:
    """Run a service; show its refusal as a message instead of an error page."""
    try:
        action()
    except REFUSALS as exc:
        messages.error(request, error_text(exc))
        return False
    messages.success(request, success)
    return True


def form_errors_from(form: Any, exc: Exception) -> None:
    """Put a service's refusal on the form: field errors where it names a field."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    elif isinstance(exc, ValidationError):
        form.add_error(None, exc)
    else:
        form.add_error(None, error_text(exc))


def form_error_text(form: Any) -> str:
    """A bound form's errors as one sentence, for a message after a redirect."""
    parts = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        text = " ".join(str(e) for e in errors)
        parts.append(f"{label}: {text}" if label else text)
    return " ".join(parts)
