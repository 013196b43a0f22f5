"""DRF glue: one exception handler that turns domain errors into clear JSON 4xx answers."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.common.errors import ApplicationError


def _validation_detail(error: DjangoValidationError) -> Any:
    if hasattr(error, "error_dict"):
        return {
            ("non_field_errors" if field == "__all__" else field): [str(m) for m in messages]
            for field, messages in error.message_dict.items()
        }
    return {"detail": " ".join(str(m) for m in error.messages), "errors": error.messages}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map domain errors to 4xx JSON; anything DRF knows keeps DRF's answer."""
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, **exc.extra}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        return Response(_validation_detail(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, PermissionDenied):
        message = str(exc) or _("You do not have permission to perform this action.")
        exc = exceptions.PermissionDenied(message)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or _("Not found."))
    return drf_exception_handler(exc, context)
