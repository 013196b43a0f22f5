"""Form widgets that render without a template per option."""

from typing import Any

from django import forms
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe


class PlainSelect(forms.Select):
    """Django's ``Select``, its markup written in Python.

    The stock widget renders a template per option: a list of a hundred institutions costs
    milliseconds on every page that offers it. The options, their order, values, labels and
    ``selected`` marks are Django's own (``optgroups``); only the writing is different.
    """

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        context = self.get_context(name, value, attrs)["widget"]
        parts = [format_html('<select name="{}"{}>', context["name"], _attrs(context["attrs"]))]
        for group_name, options, _index in context["optgroups"]:
            if group_name:
                parts.append(format_html('\n  <optgroup label="{}">', group_name))
            for option in options:
                parts.append(
                    format_html(
                        '\n  <option value="{}"{}>{}</option>\n',
                        str(option["value"]),
                        _attrs(option["attrs"]),
                        option["label"],
                    )
                )
            if group_name:
                parts.append("\n  </optgroup>")
        parts.append("\n</select>")
        return mark_safe("".join(parts))


def _attrs(attrs: dict[str, Any]) -> SafeString:
    """Attributes as Django's ``attrs.html`` writes them, in order: ``False`` left out,
    ``True`` bare."""
    return mark_safe(
        "".join(
            format_html(" {}", name) if value is True else format_html(' {}="{}"', name, str(value))
            for name, value in attrs.items()
            if value is not False
        )
    )
