"""Filters for the reviewer's comparison page."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: dict[Any, Any] | None, key: Any) -> Any:
    """`mapping[key]`, or None: the page's thumbnails are keyed by face id."""
    return (mapping or {}).get(key)
