"""Telling people what happened: a notification in their inbox, and an email if they want one.

Called inside the transaction of the act it tells about: the notifications are rows of that
transaction and the emails leave on commit, so a rolled-back act tells nobody anything.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Notification, NotificationPreference
from alliance.services.notifications import absolute_url, email_notify_each

# The email choices a person makes, by the name the page and the API use.
EMAIL_CHOICES = ("email_own_runs", "email_problem_runs", "email_reminders")


def preference_of(user: AbstractBaseUser) -> NotificationPreference:
    """The person's email choices; a person who never chose gets every kind (unsaved row)."""
    found = NotificationPreference.objects.filter(user_id=user.pk).first()
    return found if found is not None else NotificationPreference(user_id=user.pk)


def wants_email(users: Iterable[AbstractBaseUser], choice: str) -> set[int]:
    """The ids of those among ``users`` who get the emails of ``choice``."""
    if choice not in EMAIL_CHOICES:
        raise ValueError(choice)
    ids = {u.pk for u in users}
    refused = NotificationPreference.objects.filter(user_id__in=ids, **{choice: False})
    return ids - set(refused.values_list("user_id", flat=True))


def notify_people(
    *,
    people: dict[AbstractBaseUser, str],
    event: str,
    params: dict[str, Any],
    path: str,
    template: str,
    context: dict[str, Any],
) -> list[Notification]:
    """One inbox notification per person, and an email to each who wants this kind.

    ``people`` maps each person to the email choice that governs them (``email_own_runs``
    for the run's launcher, say). The email is the same for all (its template names nobody).
    Inside the caller's transaction.
    """
    if not people:
        return []
    notes = Notification.objects.bulk_create(
        Notification(user=person, event=event, params=params, path=path) for person in people
    )
    emailed: set[int] = set()
    for choice in set(people.values()):
        emailed |= wants_email([p for p, c in people.items() if c == choice], choice)
    # One rendering for all (the message names nobody), one email to each person.
    email_notify_each(
        to=[[p.email] for p in sorted(people, key=lambda p: p.pk) if p.pk in emailed and p.email],
        template=template,
        context={**context, "url": absolute_url(path)},
    )
    return notes


def _require_person(actor: AbstractBaseUser | AnonymousUser | None) -> AbstractBaseUser:
    if actor is None or not actor.is_authenticated or not actor.is_active:
        raise PermissionDenied(_("Log in to do this."))
    return actor  # type: ignore[return-value]


def notifications_of(actor: AbstractBaseUser, *, limit: int = 50) -> list[Notification]:
    """The person's newest notifications, newest first."""
    return list(Notification.objects.filter(user_id=actor.pk)[:limit])


def notifications_unread_count(actor: AbstractBaseUser) -> int:
    return Notification.objects.filter(user_id=actor.pk, read_at__isnull=True).count()


def notifications_mark_read(*, actor: AbstractBaseUser | AnonymousUser | None) -> int:
    """Mark every notification of the person read; how many were unread."""
    person = _require_person(actor)
    return Notification.objects.filter(user_id=person.pk, read_at__isnull=True).update(
        read_at=timezone.now()
    )


@transaction.atomic
def preference_update(
    *, actor: AbstractBaseUser | AnonymousUser | None, **choices: bool
) -> NotificationPreference:
    """Save the person's own email choices (only the names in ``EMAIL_CHOICES``)."""
    person = _require_person(actor)
    unknown = set(choices) - set(EMAIL_CHOICES)
    if unknown:
        raise ValueError(sorted(unknown))
    preference, _created = NotificationPreference.objects.select_for_update().get_or_create(
        user_id=person.pk
    )
    for name, value in choices.items():
        setattr(preference, name, bool(value))
    preference.save()
    return preference


def reminder_due(preference: NotificationPreference, now: datetime) -> bool:
    """Whether a reminder may go out now: none yet today (in the portal's time zone)."""
    if preference.reminded_at is None:
        return True
    return timezone.localdate(preference.reminded_at) < timezone.localdate(now)


def reminder_claim(user: AbstractBaseUser, now: datetime) -> bool:
    """Inside the caller's transaction: True (and today's reminder recorded) if the person
    wants reminders and has had none today. The row lock makes two concurrent passes send one."""
    preference, _created = NotificationPreference.objects.select_for_update().get_or_create(
        user_id=user.pk
    )
    if not preference.email_reminders or not reminder_due(preference, now):
        return False
    preference.reminded_at = now
    preference.save(update_fields=["reminded_at"])
    return True
