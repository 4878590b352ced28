"""The review queue's rows, written directly.

The admin's `{% result_list %}` works each of the queue's 250 cells out through `lookup_field`,
`display_for_value` and a generator of `format_html` calls: about 14 ms of a 37 ms page. The queue's columns are
the item's id, its outcome and the functions of `reviews.admin_display`, which already return their markup, so
this tag calls them and wraps each in the same cell the admin would write (the same classes, links and
preserved filters); the headers, the sort links and the table are the admin's own. The link to an item, with the
filters it carries back to the queue, is worked out once for the page rather than once a row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import template
from django.contrib.admin import helpers
from django.contrib.admin.templatetags.admin_list import result_headers, result_hidden_fields
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse
from django.utils.html import conditional_escape, escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

register = template.Library()


# Stands for an item's id in the link worked out once for the page: `url_for_result` reverses, and
# `add_preserved_filters` resolves and re-encodes, the same link for each of 25 rows.
_ID = "__queue_item_id__"


def _columns(changelist: ChangeList) -> list[tuple[Callable[[Any], str], str, bool]]:
    """Each column as (its cell's text for an item, its cell's class, whether it links to the item)."""
    columns = []
    for name in changelist.list_display:
        css = "action-checkbox" if name == "action_checkbox" else f"field-{getattr(name, '__name__', name)}"
        columns.append((_cell_writer(changelist, name), css, name in changelist.list_display_links))
    return columns


def _cell_writer(changelist: ChangeList, name) -> Callable[[Any], str]:
    if callable(name):
        return lambda item: conditional_escape(name(item))
    if name == "action_checkbox":
        return _checkbox_writer()
    field = changelist.model._meta.get_field(name)
    empty = changelist.model_admin.get_empty_value_display()

    def text(item) -> str:
        value = getattr(item, f"get_{name}_display")() if field.choices else getattr(item, field.attname)
        return conditional_escape(empty if value in (None, "") else value)

    return text


def _checkbox_writer() -> Callable[[Any], str]:
    """`ModelAdmin.action_checkbox`'s markup, with its label translated once for the page."""
    label = gettext("Select this object for an action - {}")
    name = helpers.ACTION_CHECKBOX_NAME
    return lambda item: mark_safe(
        f'<input type="checkbox" name="{name}" value="{item.pk}" class="action-select" '
        f'aria-label="{escape(label.format(item))}">'
    )


def _rows(changelist: ChangeList) -> list[list[SafeString]]:
    """Each row as one cell list of a single string: the template then loops over 25 rows, not 250 cells."""
    link = escape(
        add_preserved_filters(
            {"preserved_filters": changelist.preserved_filters, "opts": changelist.opts},
            reverse(
                f"admin:{changelist.opts.app_label}_{changelist.opts.model_name}_change",
                args=(_ID,),
                current_app=changelist.model_admin.admin_site.name,
            ),
        )
    )
    columns = _columns(changelist)
    rows = []
    for item in changelist.result_list:
        url = link.replace(_ID, str(quote(item.pk)))
        cells, first = [], True
        for text, css, linked in columns:
            if linked:
                tag = "th" if first else "td"
                first = False
                cells.append(f'<{tag} class="{css}"><a href="{url}">{text(item)}</a></{tag}>')
            else:
                cells.append(f'<td class="{css}">{text(item)}</td>')
        rows.append([mark_safe("".join(cells))])
    return rows


@register.inclusion_tag("admin/change_list_results.html")
def review_queue_results(changelist: ChangeList) -> dict:
    """What `{% result_list %}` gives its template, with the rows made by `_rows`."""
    headers = list(result_headers(changelist))
    return {
        "cl": changelist,
        "result_hidden_fields": list(result_hidden_fields(changelist)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for header in headers if header["sortable"] and header["sorted"]),
        "results": _rows(changelist),
    }
