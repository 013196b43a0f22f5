"""Read-side queries, already restricted to what the actor may see."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
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
