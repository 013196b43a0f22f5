"""DRF glue: one exception handler that turns domain errors into clear JSON 4xx answers, the
token endpoint with the login lockout, and times in UTC.

Times: the API writes every time in UTC as ISO 8601 with a ``Z``
(``2026-03-01T06:05:00.123456Z``), the form the audit export uses and the audit hash covers, and
reads a time without an offset as UTC. Pages show the same instants in the reader's local time,
with its zone (``portal_ui.when``). DRF would otherwise write the current time zone's offset,
which for a request is the portal's local one.
"""

from datetime import UTC
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from portal.common.errors import ApplicationError
from portal.common.throttle import lockout_message


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


class UtcDateTimeField(serializers.DateTimeField):
    """A time in UTC, ``...Z``, whatever time zone the request runs in (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_timezone", UTC)
        super().__init__(*args, **kwargs)


def use_utc_times() -> None:
    """Make every model serializer's time field a ``UtcDateTimeField`` (``CommonConfig.ready``).

    DRF has no setting for the zone it writes times in; model serializers pick the field for
    a model's ``DateTimeField`` from this mapping, so one entry covers all of them. Fields
    declared by hand use ``UtcDateTimeField`` directly.
    """
    serializers.ModelSerializer.serializer_field_mapping[models.DateTimeField] = UtcDateTimeField


class LoginLocked(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "login_locked"


@extend_schema(
    responses={
        200: inline_serializer("AuthToken", {"token": serializers.CharField()}),
        400: OpenApiResponse(description=gettext_lazy("Wrong username or password.")),
        429: OpenApiResponse(
            description=gettext_lazy(
                "Too many failed logins for this username or from this address."
            )
        ),
    }
)
class TokenObtainApi(ObtainAuthToken):
    """Exchange a username and password for the API token.

    Failures count towards the login lockout (portal.common.throttle), as on the login form.
    """

    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except exceptions.ValidationError:
            # axes flags the request it refused (or that just reached a limit) during
            # authenticate(); the DRF request carries the flag, not Django's.
            if getattr(request, "axes_locked_out", False):
                raise LoginLocked(lockout_message()) from None
            raise
