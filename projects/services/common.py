"""Helpers shared by the problem, dataset and agreement services."""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from alliance.models import Membership, Role
from alliance.permissions import acting_membership
from alliance.services.notifications import absolute_url, email_notify
from projects.models import Problem
from projects.permissions import PERMISSION_DENIALS

User = get_user_model()


def require_problem_perm(actor: AbstractBaseUser, perm: str, problem: Problem) -> Membership:
    """The actor's membership, if it may act with ``perm`` on the problem; else PermissionDenied.

    Services check again what the edges checked: a service may be called from a page, the API,
    the console or a command, and must not rely on any of them.
    """
    membership = acting_membership(actor)
    if not actor.has_perm(perm, problem):
        raise PermissionDenied(
            str(PERMISSION_DENIALS.get(perm, _("You may not do this on this problem.")))
        )
    return membership


def people_of(
    institution_ids: Iterable[int], roles: Iterable[str] = (Role.ADMIN,)
) -> list[AbstractBaseUser]:
    """Active people of these institutions with one of these roles, who can receive email."""
    return list(
        User.objects.filter(
            is_active=True,
            membership__institution_id__in=list(institution_ids),
            membership__role__in=list(roles),
            membership__institution__status="admitted",
        )
        .exclude(email="")
        .order_by("pk")
    )


def notify(
    *,
    institution_ids: Iterable[int],
    roles: Iterable[str],
    template: str,
    context: dict[str, Any],
    skip: AbstractBaseUser | None = None,
) -> None:
    """Email each person concerned on their own (nobody sees the others' addresses)."""
    path = context.get("path")
    if path:
        context = {**context, "url": absolute_url(path)}
    for person in people_of(institution_ids, roles):
        if skip is not None and person.pk == skip.pk:
            continue
        email_notify(
            to=[person.email],
            template=f"projects/email/{template}",
            context={**context, "person": person},
        )
