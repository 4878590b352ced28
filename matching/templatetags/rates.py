from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    """0.0123 → '1.2%'; small rates keep two decimals so that they do not round to zero."""
    if value is None or value == "":
        return "—"
    value = float(value) * 100
    if value == 0:
        return "0%"
    return f"{value:.2f}%" if value < 1 else f"{value:.1f}%"
