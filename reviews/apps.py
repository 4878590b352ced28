from __future__ import annotations

from django.apps import AppConfig


def _disclosures_listener(event) -> None:
    # Imported when an erasure or purge happens, so that loading the app stays light.
    from reviews.disclosure import disclosures_after_biometrics_removed

    disclosures_after_biometrics_removed(event)


def _warnings_listener(event) -> None:
    # Inside the transaction that stores the candidates: the queue never shows one without its warning.
    from reviews.services import candidate_warnings_store

    candidate_warnings_store(candidate_ids=event.candidate_ids)


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Review"

    def ready(self) -> None:
        from matching.services import biometrics_listener_register, candidates_listener_register
        from portal.audit import audit_detail_view_register, audit_rows_hidden_register
        from reviews.selectors import audit_detail_of_analysis, audit_rows_hidden_from
        from reviews.services import audit_detail_of_candidate

        biometrics_listener_register(_disclosures_listener)
        candidates_listener_register(_warnings_listener)
        audit_detail_view_register("matching.Candidate", audit_detail_of_candidate)
        audit_detail_view_register("reviews.ProbeAnalysis", audit_detail_of_analysis)
        audit_rows_hidden_register(audit_rows_hidden_from)
