"""Schemathesis against the API's own OpenAPI schema, through the WSGI app, as an org admin's API key.

Every operation gets generated requests: valid ones with random ids, valid and schema-violating ones
against the ids of real rows. None may answer 5xx. The run is seeded (FUZZ_SEED, default 15) and prints its
seed, so that a failure seen anywhere repeats with the same seed. For a longer hunt, FUZZ_EXAMPLES raises the
count and FUZZ_RANDOM=1 draws a new seed each run (printed too: pass it as FUZZ_SEED to repeat that run).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from matching.models import EnrolmentBatch, Outcome
from portal.keys import api_key_create
from tests.conftest import DEFAULT_FUZZ_SEED
from tests.factories import audit_run_rows, candidate_with

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))


# tests/conftest.py draws FUZZ_SEED for FUZZ_RANDOM=1 and prints it in the session's header.
FUZZ_SEED = int(os.environ.get("FUZZ_SEED") or DEFAULT_FUZZ_SEED)


@pytest.fixture
def wsgi_app():
    """Django's WSGI app, sharing the test's transaction: like Django's test client, it must not close the
    connection at the end of each request."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def real_ids(org, dana, alice):
    candidate = candidate_with(organisation=org, created_by=alice)
    candidate.outcome, candidate.outcome_reason, candidate.outcome_at = Outcome.CONFIRMED, "Same ears.", timezone.now()
    candidate.save()
    gallery = candidate.subject.gallery
    batch = EnrolmentBatch.objects.create(gallery=gallery, archive="x.zip", manifest="x.csv")
    run = audit_run_rows(org)
    return {
        "/api/cases/": {"id": candidate.case_id, "photo_id": candidate.search.face.photo_id},
        "/api/galleries/": {"id": gallery.pk},
        "/api/subjects/": {"id": candidate.subject_id},
        "/api/imports/": {"id": batch.pk},
        "/api/audit-runs/": {"id": run.pk},
    }


def _ids_for(path: str, real_ids: dict) -> dict:
    return next((ids for prefix, ids in real_ids.items() if path.startswith(prefix)), {})


def _fuzz(operation, mode, fixed, auth, run_seed: int, examples: Counter, statuses: Counter, failures: list):
    """A Hypothesis test of one operation in one flavour, recording (not raising) failures."""

    @seed(run_seed)
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(headers=auth)
        examples[operation.label] += 1
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except (Exception, BaseExceptionGroup) as failure:  # recorded, so that every operation still runs
            failures.append(f"{operation.label} [{mode}] -> {response.status_code}: {failure!s:.300}")

    return run


def test_no_generated_request_makes_the_api_fail(wsgi_app, real_ids, org, dana, monkeypatch):
    # given: an org admin's key, which reaches every operation, and no throttling in the way
    _key, secret = api_key_create(organisation=org, name="Fuzzer", role="org_admin", acting_user=dana)
    auth = {"Authorization": f"Bearer {secret}"}
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "1000000/min")
    cache.clear()
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    examples: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    run_seed = FUZZ_SEED
    started = time.monotonic()

    # when: each operation gets valid requests with random ids, and valid and invalid ones with real ids
    for operation in operations:
        path_parameters = {
            name: value for name, value in _ids_for(operation.path, real_ids).items() if f"{{{name}}}" in operation.path
        }
        fixed = path_parameters or None
        flavours = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, fixed)]
        if fixed:
            flavours.append((GenerationMode.POSITIVE, fixed))
        for mode, fixed in flavours:
            _fuzz(operation, mode, fixed, auth, run_seed, examples, statuses, failures)()

    # then
    elapsed = time.monotonic() - started
    # The figures, for the report: run with -s to see them (the seed is also in the failure message).
    print(
        f"\nschemathesis: seed {run_seed}, {len(operations)} operations, "
        f"{sum(examples.values())} requests in {elapsed:.0f}s, "
        f"statuses {dict(sorted(statuses.items()))}, {len(failures)} failures"
    )
    assert len(operations) >= 20
    assert all(examples[operation.label] > 0 for operation in operations)
    assert failures == [], f"FUZZ_SEED={run_seed} repeats this run"
