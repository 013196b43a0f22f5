"""Small pieces every page shares: a time with its zone, a hash shown short.

Times: people read the portal's local time (``TIME_ZONE``, or the zone activated for the
request) and it always says which, e.g. ``2026-03-01 14:05 UTC+8``; the ``<time>`` element
carries the instant in UTC for machines, in the form the REST API and the audit export use.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.translation import gettext as _

register = template.Library()

# How many hex digits of a hash a page shows before "…"; enough to tell two apart by eye.
SHORT_HASH = 12


def zone_label(offset: timedelta | None) -> str:
    """``UTC+8``, ``UTC-3:30`` or ``UTC`` for an offset from UTC."""
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def utc_text(value: datetime) -> str:
    """The instant in UTC as ISO 8601 with a ``Z``: what the API and the audit export write."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@register.filter
def when(value: Any, precision: str = "minutes") -> str:
    """A datetime in local time with its zone, in a ``<time>`` element; ``""`` for none.

    ``precision`` is ``minutes`` (the default), ``seconds``, or ``time`` (the clock only,
    with seconds, for a moment of today's work such as a run's start).
    """
    if not isinstance(value, datetime):
        return ""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    local = timezone.localtime(value)
    shape = {"seconds": "Y-m-d H:i:s", "time": "H:i:s"}.get(precision, "Y-m-d H:i")
    return format_html(
        '<time datetime="{}">{} {}</time>',
        utc_text(value),
        date_format(local, shape),
        zone_label(local.utcoffset()),
    )


@register.simple_tag
def hash_value(value: str | None, full: bool = False, label: str = "SHA-256") -> str:
    """A hash shown short, with its full value on demand and a copy button.

    ``full`` shows every digit (wrapping as needed), for documents whose hash is their point,
    such as an agreement's fingerprint; the copy button is there either way. Written in Python,
    not a template: a page of audit events shows two hashes a row.
    """
    if not value:
        return "—"
    short = value[:SHORT_HASH]
    if not full and len(value) > SHORT_HASH:
        shown = format_html(
            '<details class="hash-more"><summary><code class="hash short" title="{}">{}</code>'
            '<span aria-hidden="true">…</span><span class="visually-hidden"> {}</span></summary>'
            '<code class="hash full">{}</code></details>',
            value,
            short,
            _("show the whole %(label)s") % {"label": label},
            value,
        )
    else:
        shown = format_html('<code class="hash full">{}</code>', value)
    return format_html(
        '<span class="hash-value">{} <button type="button" class="copy" data-copy="{}" '
        'data-copied="{}" hidden>{}<span class="visually-hidden"> {}</span></button></span>',
        shown,
        value,
        _("Copied"),
        _("Copy"),
        _("the %(label)s %(short)s…") % {"label": label, "short": short},
    )
