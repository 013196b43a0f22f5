"""Template helpers that present audit events (see ``alliance.audit_display``)."""

from typing import Any

from django import template

from alliance import audit_display

register = template.Library()


@register.filter
def audit_action(action: str) -> str:
    return audit_display.action_label(action)


@register.filter
def audit_target_type(target_type: str) -> str:
    return audit_display.target_type_label(target_type)


@register.simple_tag
def audit_actor(event: Any) -> audit_display.Actor:
    return audit_display.actor_of(event)


@register.simple_tag
def audit_target(event: Any) -> str:
    return audit_display.target_text(event.target_type, event.target_label)


@register.simple_tag(takes_context=True)
def audit_details(context: template.Context, event: Any) -> list[tuple[str, str]]:
    """The payload's rows, with the institution names the view looked up (``site_names``)."""
    return audit_display.payload_items(event.payload, context.get("site_names"))


@register.inclusion_tag("alliance/audit_signed_head.html")
def audit_signed_head() -> dict[str, Any]:
    """The newest signed checkpoint of the audit log, linked to where members fetch it."""
    from alliance.services.audit_log import audit_checkpoint_latest

    return {"head": audit_checkpoint_latest()}
