from __future__ import annotations

from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Review"

    def ready(self) -> None:
        from portal.audit import audit_detail_view_register
        from reviews.services import audit_detail_of_candidate

        audit_detail_view_register("matching.Candidate", audit_detail_of_candidate)
