"""Read-side queries, already restricted to what the actor may see."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Count, Q, QuerySet

from alliance.models import AuditEvent, Institution, Membership, MembershipApplication, Sector
from alliance.permissions import membership_of


def institution_directory() -> QuerySet[Institution]:
    """Admitted institutions: the public member directory."""
    return Institution.objects.filter(status=Institution.Status.ADMITTED).order_by("sector", "name")


def institution_directory_by_sector() -> list[tuple[str, list[Institution]]]:
    """The directory grouped by sector label, in the declared order, empty sectors left out."""
    groups: dict[str, list[Institution]] = {value: [] for value in Sector.values}
    for institution in institution_directory():
        groups.setdefault(institution.sector, []).append(institution)
    return [(Sector(value).label, items) for value, items in groups.items() if items]


def member_counts_by_sector() -> list[dict]:
    counts = dict(institution_directory().values_list("sector").annotate(n=Count("id")).order_by())
    return [{"sector": s.label, "value": s.value, "count": counts.get(s.value, 0)} for s in Sector]


def application_list_pending() -> QuerySet[MembershipApplication]:
    return (
        MembershipApplication.objects.filter(status=MembershipApplication.Status.PENDING)
        .select_related("institution")
        .order_by("submitted_at")
    )


def member_list_for(actor: AbstractBaseUser | AnonymousUser) -> QuerySet[Membership]:
    """The people of the actor's own institution (nobody's, for anyone without one)."""
    own = membership_of(actor)
    if own is None:
        return Membership.objects.none()
    return Membership.objects.filter(institution_id=own.institution_id).select_related(
        "user", "institution", "invited_by"
    )


def audit_event_list_for(actor: AbstractBaseUser | AnonymousUser) -> QuerySet[AuditEvent]:
    """Staff see every event; members see the events their institution did or that concern it."""
    events = AuditEvent.objects.select_related("actor_institution", "subject_institution")
    if actor.is_authenticated and actor.is_staff:
        return events
    own = membership_of(actor)
    if own is None:
        return events.none()
    return events.filter(
        Q(actor_institution_id=own.institution_id) | Q(subject_institution_id=own.institution_id)
    )


def institution_status_counts() -> dict[str, int]:
    counts = dict(Institution.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in Institution.Status.values}


def institution_status_rows() -> list[dict]:
    """Institutions by status, with translated labels, for overviews."""
    counts = institution_status_counts()
    return [
        {"status": s.label, "value": s.value, "count": counts[s.value]} for s in Institution.Status
    ]


@dataclass(frozen=True)
class AuditFilter:
    """What the audit explorer narrows the events to; empty values filter nothing.

    ``since`` is inclusive and ``until`` exclusive (aware datetimes), so a "to" date covers
    its whole day.
    """

    institution_id: int | None = None
    actor_username: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    target_text: str = ""
    since: datetime | None = None
    until: datetime | None = None


def audit_event_filter(events: QuerySet[AuditEvent], where: AuditFilter) -> QuerySet[AuditEvent]:
    """``events`` narrowed by ``where``; each condition matches an index that ends in -seq."""
    if where.institution_id is not None:
        events = events.filter(
            Q(actor_institution_id=where.institution_id)
            | Q(subject_institution_id=where.institution_id)
        )
    if where.actor_username:
        events = events.filter(actor_username=where.actor_username)
    if where.action:
        events = events.filter(action=where.action)
    if where.target_type:
        events = events.filter(target_type=where.target_type)
    if where.target_id:
        events = events.filter(target_id=where.target_id)
    if where.target_text:
        events = events.filter(target_label__icontains=where.target_text)
    if where.since is not None:
        events = events.filter(created_at__gte=where.since)
    if where.until is not None:
        events = events.filter(created_at__lt=where.until)
    return events


@dataclass(frozen=True)
class AuditPage:
    """One page of events, newest first, with the cursors of its neighbours (None: no more)."""

    events: list[AuditEvent]
    newer_after: int | None
    older_before: int | None


AUDIT_PAGE_SIZE = 50


def audit_event_page(
    events: QuerySet[AuditEvent],
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = AUDIT_PAGE_SIZE,
) -> AuditPage:
    """A keyset page of ``events``: the ``size`` events just older than ``before`` or just newer
    than ``after`` (the newest when neither), in at most two indexed queries.

    Keyset instead of OFFSET: the last page costs what the first does, and events appended
    while someone reads do not shift the pages under them.
    """
    if after is not None:
        rows = list(events.filter(seq__gt=after).order_by("seq")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        # An empty page links nowhere, so its neighbours need no query.
        has_older = bool(rows) and events.filter(seq__lt=rows[-1].seq).exists()
    else:
        window = events.filter(seq__lt=before) if before is not None else events
        rows = list(window.order_by("-seq")[: size + 1])
        has_older = len(rows) > size
        rows = rows[:size]
        has_newer = (
            bool(rows) and before is not None and events.filter(seq__gt=rows[0].seq).exists()
        )
    return AuditPage(
        events=rows,
        newer_after=rows[0].seq if has_newer else None,
        older_before=rows[-1].seq if has_older else None,
    )


def audit_action_list() -> list[str]:
    """Every action recorded so far, sorted: one index probe per distinct action.

    A plain DISTINCT reads the whole table (100k rows and more); this recursive query jumps
    from one action to the next along the (action, -seq) index. Action names are code
    constants, not data about anyone, so everybody gets the full list.
    """
    table = AuditEvent._meta.db_table  # our own name: nothing from the request reaches the SQL
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE actions(action) AS (
                SELECT MIN(action) FROM {table}
                UNION ALL
                SELECT (SELECT MIN(e.action) FROM {table} e WHERE e.action > actions.action)
                FROM actions WHERE actions.action IS NOT NULL
            )
            SELECT action FROM actions WHERE action IS NOT NULL
            """
        )
        return [row[0] for row in cursor.fetchall()]


def audit_institution_choices(actor: AbstractBaseUser | AnonymousUser) -> QuerySet[Institution]:
    """Institutions the actor may filter the audit trail by: all for staff; for members the
    admitted ones (the public directory) and their own, whatever its status."""
    institutions = Institution.objects.order_by("name")
    if actor.is_authenticated and actor.is_staff:
        return institutions
    own = membership_of(actor)
    visible = Q(status=Institution.Status.ADMITTED)
    if own is not None:
        visible |= Q(pk=own.institution_id)
    return institutions.filter(visible)


# Each exported column and the lookup that reads it.
_AUDIT_EXPORT_LOOKUPS = {
    "seq": "seq",
    "created_at": "created_at",
    "actor": "actor_username",
    "actor_id": "actor_id",
    "actor_institution": "actor_institution__slug",
    "actor_institution_id": "actor_institution_id",
    "subject_institution": "subject_institution__slug",
    "subject_institution_id": "subject_institution_id",
    "action": "action",
    "target_type": "target_type",
    "target_id": "target_id",
    "target_label": "target_label",
    "payload": "payload",
    "prev_hash": "prev_hash",
    "hash": "hash",
}
AUDIT_EXPORT_FIELDS = list(_AUDIT_EXPORT_LOOKUPS)


def audit_event_export_rows(events: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    """``events`` in chain order as plain dicts, read in chunks so any size streams.

    The rows carry every field the hash covers, with the time in the exact form hashed, so
    whoever receives an export can recompute each hash and link without the portal. Values,
    not model instances: an export of the whole trail builds 100,000 of them.
    """
    rows = events.order_by("seq").values_list(*_AUDIT_EXPORT_LOOKUPS.values())
    for row in rows.iterator(chunk_size=2000):
        record = dict(zip(AUDIT_EXPORT_FIELDS, row, strict=True))
        record["created_at"] = row[1].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record["actor_institution"] = record["actor_institution"] or ""
        record["subject_institution"] = record["subject_institution"] or ""
        yield record


def institution_names(slugs: set[str]) -> dict[str, str]:
    """The names of the institutions with these slugs (audit payloads name sites by slug)."""
    if not slugs:
        return {}
    return dict(Institution.objects.filter(slug__in=slugs).values_list("slug", "name"))
