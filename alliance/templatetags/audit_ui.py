"""Template helpers that present audit events (see ``alliance.audit_display``)."""

from typing import Any
from urllib.parse import quote

from django import template
from django.urls import reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from alliance import audit_display
from portal.common.templatetags.portal_ui import hash_value, when

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


@register.simple_tag(takes_context=True)
def audit_rows(context: template.Context, events: Any, chain_columns: bool = False) -> SafeString:
    """The audit table's rows: each event, and with ``chain_columns`` its previous hash, a link
    to its target's events and its details.

    Written in Python rather than as a template loop: the explorer shows 50 events a page, and
    a template costs a millisecond a row where this costs a tenth of one. The markup is the
    table's (``alliance/audit_table.html``).
    """
    names = context.get("site_names")
    audit_url = reverse("audit-list")
    every_event = _("Every event of this target")
    nothing_more = _("This event records no further details.")
    rows = []
    for event in events:
        who = audit_display.actor_of(event)
        actor = escape(who.name)
        if who.institution:
            actor += format_html(' <span class="muted">({})</span>', who.institution)
        subject = event.subject_institution if event.subject_institution_id else None
        target = escape(audit_display.target_text(event.target_type, event.target_label))
        if chain_columns:
            if subject is not None and event.subject_institution_id != event.actor_institution_id:
                concerns = _("concerns %(name)s") % {"name": escape(subject.name)}
                actor += format_html('<br><span class="muted">{}</span>', mark_safe(concerns))
            if event.target_type:
                target += format_html(
                    '<br><a class="muted" href="{}?target_type={}&amp;target_id={}" title="{}">'
                    "{}</a>",
                    audit_url,
                    quote(event.target_type, safe="/"),
                    quote(event.target_id, safe="/"),
                    every_event,
                    audit_display.target_type_label(event.target_type),
                )
        rows.append(
            format_html(
                '\n    <tr id="event-{}" class="event"><td>{}</td><td>{}</td>\n'
                '      <td class="audit-action">{}<br><code>{}</code></td>\n'
                '      <td class="actor actor-{}">{}</td>\n'
                "      <td>{}</td>\n"
                "      {}<td>{}</td></tr>",
                event.seq,
                event.seq,
                when(event.created_at, "seconds"),
                audit_display.action_label(event.action),
                event.action,
                who.kind,
                actor,
                target,
                format_html("<td>{}</td>", hash_value(event.prev_hash)) if chain_columns else "",
                hash_value(event.hash),
            )
        )
        if chain_columns:
            items = audit_display.payload_items(event.payload, names)
            if items:
                details = format_html(
                    '<dl class="payload">{}</dl>',
                    mark_safe(
                        "".join(
                            format_html("<dt><code>{}</code></dt><dd>{}</dd>", key, text)
                            for key, text in items
                        )
                    ),
                )
            else:
                details = format_html('<p class="muted">{}</p>', nothing_more)
            if event.target_type:
                target_line = _("Target: %(type)s %(id)s") % {
                    "type": escape(event.target_type),
                    "id": escape(event.target_id),
                }
                details += format_html('\n      <p class="muted">{}</p>', mark_safe(target_line))
            summary = _("Details of event %(seq)s") % {"seq": event.seq}
            rows.append(
                format_html(
                    '\n    <tr class="event-details" id="event-{}-details"><td></td>'
                    '<td colspan="6"><details><summary>{}</summary>\n      {}</details></td></tr>',
                    event.seq,
                    mark_safe(escape(summary)),
                    details,
                )
            )
    return mark_safe("".join(rows))
