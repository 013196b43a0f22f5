"""Who is asking, read in one query: the signed-in person with their membership and institution.

Nearly every page and API call asks "which institution does this person act for, and is it
admitted?" (``alliance.permissions.membership_of``). Reading the person, then the membership,
then the institution costs three queries a request; reading them together costs one, and staff
without a membership pay nothing more either (the absent membership is remembered).
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from alliance.permissions import READ_WITH_MEMBERSHIP

WITH_MEMBERSHIP = "membership__institution"


class PortalBackend(ModelBackend):
    """Django's model backend; a session's person comes with their membership and institution."""

    def get_user(self, user_id: Any) -> Any:
        users = get_user_model()._default_manager.select_related(WITH_MEMBERSHIP)
        user = users.filter(pk=user_id).first()
        if user is None or not self.user_can_authenticate(user):
            return None
        setattr(user, READ_WITH_MEMBERSHIP, True)
        return user


class PortalTokenAuthentication(TokenAuthentication):
    """DRF's token authentication; the token's person comes with membership and institution."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        tokens = self.get_model().objects.select_related(f"user__{WITH_MEMBERSHIP}")
        token = tokens.filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        setattr(token.user, READ_WITH_MEMBERSHIP, True)
        return (token.user, token)
