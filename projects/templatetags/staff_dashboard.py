"""The staff dashboard at the top of the admin console's index.

It lives in ``projects`` because it shows failing training runs; the console's index template
only loads it, so the alliance app stays unaware of projects.
"""

from typing import Any

from django import template

from alliance.services.audit import audit_chain_status
from projects.dashboards.alliance import staff_summary

register = template.Library()


@register.inclusion_tag("dashboards/staff_console.html", takes_context=True)
def staff_dashboard(context: template.Context) -> dict[str, Any]:
    """Applications waiting, institutions by status, failing runs and the audit chain's state.

    The admin site already admits staff only; the check is repeated so that the tag shows
    nothing if it is ever placed on a page that others can reach.
    """
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {"allowed": False}
    return {"allowed": True, "summary": staff_summary(), "chain": audit_chain_status()}
