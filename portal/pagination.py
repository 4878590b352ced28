"""The API's page numbers. A module of its own: DRF imports it while portal.api is still loading."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination

# The last page number a list accepts (matching.filters refuses a larger `?page=` with a 400).
PAGE_MAX = 1_000_000


class BoundedPagination(PageNumberPagination):
    """DRF's page numbers, with `?page=`'s bounds in the schema."""

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": PAGE_MAX})
        return parameters
