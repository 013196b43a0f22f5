"""Member sites: the keys their workers sign with, and their signed heartbeats.

An institution's admin registers the public half of the key its site worker generated
(``manage.py site_keygen``); registering a new key retires the old one (a rotation), and the
admin or alliance staff revoke a key that may have leaked. Each is an audit event. The portal
accepts an answer or a heartbeat only when the site's active key verifies it.
"""

import datetime
import functools
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Institution, Role
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record
from portal.common.errors import ApplicationError, Conflict
from projects.federation import signing
from projects.federation.protocol import Heartbeat, ProtocolError, open_wire
from projects.models import Participation, Problem, SiteHeartbeat, SiteKey

logger = logging.getLogger(__name__)

# A heartbeat claiming to be sent this far in the future is not believed.
HEARTBEAT_CLOCK_SKEW = 300


def site_keys_owner(actor: AbstractBaseUser | None) -> Institution:
    """The institution whose site keys ``actor`` manages: their own, as its admin."""
    return acting_membership(actor, roles=(Role.ADMIN,)).institution


def _admin_of(actor: AbstractBaseUser, institution: Institution) -> None:
    if site_keys_owner(actor).pk != institution.pk:
        raise PermissionDenied(_("Only the institution's own admins manage its site keys."))


def may_manage_keys(actor: AbstractBaseUser | None, institution: Institution) -> bool:
    try:
        _admin_of(actor, institution)  # type: ignore[arg-type]
    except PermissionDenied:
        return False
    return True


def site_key_register(
    *,
    actor: AbstractBaseUser | None,
    public_key: str,
    label: str = "",
    institution: Institution | None = None,
) -> SiteKey:
    """Register the public key of an institution's site worker; it replaces the active one.

    An admin registers for their own institution (``institution`` may be left out); ``actor``
    None is the system (the demo seeding its sites) and names the institution. The old key is
    retired in the same transaction: answers it signs stop counting at once, so restart the
    worker with the new key.
    """
    if actor is not None:
        owner = site_keys_owner(actor)
        if institution is not None and institution.pk != owner.pk:
            raise PermissionDenied(_("Only the institution's own admins manage its site keys."))
        institution = owner
    if institution is None:
        raise ValueError("The system registers a key for a named institution.")
    text = (public_key or "").strip()
    try:
        signing.public_from_text(text)
    except signing.BadKey as exc:
        raise ApplicationError(
            _("That is not an Ed25519 public key: give the base64 line site_keygen printed."),
            extra={"errors": {"public_key": str(exc)}},
        ) from exc
    fingerprint = signing.fingerprint(text)
    label = (label or "").strip()[:100]
    with transaction.atomic():
        if SiteKey.objects.filter(public_key=text).exists():
            raise Conflict(_("This key is already registered; generate a new one to rotate."))
        old = list(
            SiteKey.objects.select_for_update().filter(
                institution=institution, status=SiteKey.Status.ACTIVE
            )
        )
        now = timezone.now()
        for key in old:
            key.status = SiteKey.Status.RETIRED
            key.retired_at = now
            key.save(update_fields=["status", "retired_at"])
            audit_record(
                actor=actor,
                action="site_key.retired",
                target=institution,
                payload={"fingerprint": key.fingerprint, "replaced_by": fingerprint},
            )
        try:
            with transaction.atomic():
                key = SiteKey.objects.create(
                    institution=institution,
                    public_key=text,
                    fingerprint=fingerprint,
                    label=label,
                    registered_by=actor,
                )
        except IntegrityError as exc:  # a concurrent registration of the same key
            raise Conflict(_("This key is already registered.")) from exc
        audit_record(
            actor=actor,
            action="site_key.registered",
            target=institution,
            payload={
                "fingerprint": fingerprint,
                "public_key": text,
                "label": label,
                "replaces": [k.fingerprint for k in old],
            },
        )
    return key


def check_may_revoke(actor: AbstractBaseUser, key: SiteKey) -> None:
    """PermissionDenied unless ``actor`` is staff or an admin of the key's institution."""
    if not getattr(actor, "is_staff", False):
        _admin_of(actor, key.institution)


def site_key_revoke(*, actor: AbstractBaseUser, key: SiteKey, reason: str) -> SiteKey:
    """Revoke a key (the institution's admins, or staff): nothing it signs counts from now on."""
    check_may_revoke(actor, key)
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(
            _("Say why the key is revoked (for example: the machine was compromised)."),
            extra={"errors": {"reason": _("This field is required.")}},
        )
    with transaction.atomic():
        key = SiteKey.objects.select_for_update().select_related("institution").get(pk=key.pk)
        if key.status == SiteKey.Status.REVOKED:
            raise Conflict(_("This key is already revoked."))
        key.status = SiteKey.Status.REVOKED
        key.revoked_at = timezone.now()
        key.revoked_by = actor
        key.reason = reason[:2000]
        key.save(update_fields=["status", "revoked_at", "revoked_by", "reason"])
        audit_record(
            actor=actor,
            action="site_key.revoked",
            target=key.institution,
            payload={"fingerprint": key.fingerprint, "reason": key.reason},
        )
    return key


@functools.lru_cache(maxsize=256)
def _public(text: str) -> Any:
    return signing.public_from_text(text)


def heartbeat_receive(wire: Any) -> bool:
    """Record a site's signed heartbeat; False (and logged) when it is not provably the site's."""
    try:
        envelope = open_wire(wire, Heartbeat)
    except ProtocolError as exc:
        logger.warning("Dropped a heartbeat that is not one (%s).", exc)
        return False
    beat = envelope.body
    key = (
        SiteKey.objects.select_related("institution")
        .filter(institution__slug=beat.site, status=SiteKey.Status.ACTIVE)
        .first()
    )
    if (
        key is None
        or beat.kid != key.fingerprint
        or not envelope.signed_by(_public(key.public_key))
    ):
        logger.warning(
            "Dropped a heartbeat claiming to be from %s: not signed by its key.", beat.site
        )
        return False
    now = timezone.now()
    sent = datetime.datetime.fromtimestamp(beat.sent_at, tz=datetime.UTC)
    if sent > now + datetime.timedelta(seconds=HEARTBEAT_CLOCK_SKEW):
        logger.warning("Dropped a heartbeat from %s sent in the future.", beat.site)
        return False
    with transaction.atomic():
        current = (
            SiteHeartbeat.objects.select_for_update().filter(institution=key.institution).first()
        )
        if current is not None and current.sent_at >= sent:
            return False  # an old or replayed beat says nothing new
        SiteHeartbeat.objects.update_or_create(
            institution=key.institution,
            defaults={"key": key, "sent_at": sent, "received_at": now, "version": beat.version},
        )
    return True


@dataclass(frozen=True)
class SiteHealth:
    """What the portal knows of a site's worker: its active key and when it was last heard."""

    institution: Institution
    fingerprint: str | None
    heard_at: datetime.datetime | None
    version: str

    @property
    def stale(self) -> bool:
        if self.heard_at is None:
            return True
        age = (timezone.now() - self.heard_at).total_seconds()
        return age > settings.SITE_STALE_SECONDS


def site_health(institutions: list[Institution]) -> dict[int, SiteHealth]:
    """Each institution's site health, in two queries whatever their number."""
    ids = [i.pk for i in institutions]
    keys = dict(
        SiteKey.objects.filter(institution_id__in=ids, status=SiteKey.Status.ACTIVE)
        .order_by()
        .values_list("institution_id", "fingerprint")
    )
    beats = {
        b.institution_id: b
        for b in SiteHeartbeat.objects.filter(institution_id__in=ids, key__status="active")
        .order_by()
        .only("institution_id", "received_at", "version")
    }
    return {
        i.pk: SiteHealth(
            institution=i,
            fingerprint=keys.get(i.pk),
            heard_at=beats[i.pk].received_at if i.pk in beats else None,
            version=beats[i.pk].version if i.pk in beats else "",
        )
        for i in institutions
    }


def launch_warnings(problem: Problem) -> list[str]:
    """A warning for each active contributor whose site has not been heard from lately."""
    institutions = [
        p.institution
        for p in problem.participations.filter(
            role=Participation.Role.CONTRIBUTOR, status=Participation.Status.ACTIVE
        )
        .select_related("institution")
        .order_by("institution__name")
    ]
    minutes = max(settings.SITE_STALE_SECONDS // 60, 1)
    warnings = []
    for health in site_health(institutions).values():
        if health.fingerprint is None:
            continue  # the policy check names it: it cannot take part at all
        if health.heard_at is None:
            warnings.append(
                _("%(name)s's site worker has never been heard from; its answers may not come.")
                % {"name": health.institution.name}
            )
        elif health.stale:
            warnings.append(
                _(
                    "%(name)s's site worker has not been heard from for more than %(minutes)s "
                    "minutes (last at %(time)s); it may drop out of the rounds."
                )
                % {
                    "name": health.institution.name,
                    "minutes": minutes,
                    "time": timezone.localtime(health.heard_at).strftime("%Y-%m-%d %H:%M:%S %Z"),
                }
            )
    return warnings
