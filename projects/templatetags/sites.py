"""``{% site_status institution %}``: a site worker's key and last heartbeat, in one line."""

from django import template

from alliance.models import Institution
from projects.services.sites import SiteHealth, site_health

register = template.Library()


@register.inclusion_tag("projects/site_status.html")
def site_status(institution: Institution, health: SiteHealth | None = None) -> dict:
    """The status of ``institution``'s site worker (``health`` when the caller read it already)."""
    if health is None:
        health = site_health([institution])[institution.pk]
    return {"health": health}
