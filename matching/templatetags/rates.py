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


@register.filter
def in100(value: float | None) -> str:
    """A share as a natural frequency out of 100: 0.48 → '48', 0.004 → '<1'."""
    from matching.accuracy.gallery_risk import in_100

    return in_100(None if value in (None, "") else float(value))


@register.filter
def strangers(figure) -> str:
    """A 1:N figure's share of strangers' searches returning someone, out of 100, with its interval."""
    from matching.accuracy.gallery_risk import in_100_interval

    if figure is None or figure.fpir is None:
        return "—"
    return in_100_interval(figure.fpir, figure.fpir_low, figure.fpir_high)


@register.filter
def misses(figure) -> str:
    """A 1:N figure's share of searches for someone enrolled that miss them, out of 100, with its interval."""
    from matching.accuracy.gallery_risk import in_100_interval

    if figure is None or figure.fnir is None:
        return "—"
    return in_100_interval(figure.fnir, figure.fnir_low, figure.fnir_high)
