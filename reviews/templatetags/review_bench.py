"""Filters for the reviewer's comparison page."""

from __future__ import annotations

from typing import Any

from django import template
from django.forms.boundfield import BoundWidget
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def get_item(mapping: dict[Any, Any] | None, key: Any) -> Any:
    """`mapping[key]`, or None: the page's thumbnails are keyed by face id."""
    return (mapping or {}).get(key)


@register.filter
def input_tag(option: BoundWidget) -> SafeString:
    """`{{ option.tag }}` of a radio button or checkbox, written here: Django renders its input template once per
    option, and the comparison step has thirty of them (a tenth of the page). The markup is that template's:
    `test_the_inputs_are_those_djangos_own_template_writes` holds the two together."""
    data = option.data
    html = format_html('<input type="{}" name="{}"', data["type"], data["name"])
    if data["value"] is not None:
        html += format_html(' value="{}"', data["value"])
    for name, value in data["attrs"].items():
        if value is True:
            html += format_html(" {}", name)
        elif value is not False:
            html += format_html(' {}="{}"', name, value)
    return mark_safe(html + ">")
