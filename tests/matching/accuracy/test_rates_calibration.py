"""Do the audit's intervals hold what they promise? Audit one half of the shared photos, measure the other.

The people are split in two by a hash of their identity label (fixed, and blind to the photos). Every group
that the first half's audit calls sufficient is measured again on the second half at the same threshold,
and we count how often the second half's FMR falls inside the first half's 95% interval. With honest
intervals and halves of similar size that is about 83% (the difference of two estimates has twice the
variance of one), so the suite asks for at least 80%. Pair-counting Wilson intervals, which treat every
pair of photos as independent, are measured beside them for comparison.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from django.conf import settings

from matching.accuracy.rates import audit_compute, wilson_interval
from matching.sealing import encodings_open

THRESHOLD = 0.6


def _half(identity: str) -> int:
    return int(hashlib.sha256(identity.encode()).hexdigest(), 16) % 2


def _audit(samples, attributes, half: int, **limits):
    rows = [s for s in samples if _half(s[2]) == half]
    encodings = encodings_open([s[4] for s in rows])
    columns = {name: [s[3].get(name, "") for s in rows] for name in attributes}
    return audit_compute(encodings, [s[2] for s in rows], columns, thresholds=(THRESHOLD,), **limits)


# The audit is read from the session's imported photos; the marker makes pytest-django set up the database
# even when this test runs alone.
@pytest.mark.django_db
def test_intervals_from_one_half_cover_the_other_halfs_rates(imported_audit, capsys):
    # Given the shared photos (encoded once for the session), split by identity into halves
    samples, attributes = imported_audit.samples, imported_audit.attributes

    # When the first half is audited and the second measured
    first = _audit(
        samples,
        attributes,
        0,
        min_identities=settings.AUDIT_MIN_IDENTITIES,
        min_effective_pairs=settings.AUDIT_MIN_EFFECTIVE_PAIRS,
    )
    second = _audit(samples, attributes, 1, min_identities=0, min_effective_pairs=0)
    inside = naive_inside = 0
    z_identity, z_naive = [], []
    groups = 0
    for group in first.groups:
        if group.insufficient or group.key == "all":
            continue
        try:
            other = second.group(group.key).row_at(THRESHOLD)
        except KeyError:
            continue
        if other.fmr is None:
            continue
        mine = group.row_at(THRESHOLD)
        groups += 1
        inside += mine.fmr_low <= other.fmr <= mine.fmr_high
        low, high = wilson_interval(mine.false_matches, mine.impostor_pairs)
        naive_inside += low <= other.fmr <= high
        # Standardised difference over the combined error: binomial on pairs, or on the effective samples
        pooled = (mine.false_matches + other.false_matches) / (mine.impostor_pairs + other.impostor_pairs)
        spread = pooled * (1 - pooled)
        z_naive.append(
            (other.fmr - mine.fmr) / math.sqrt(spread * (1 / mine.impostor_pairs + 1 / other.impostor_pairs))
        )
        z_identity.append(
            (other.fmr - mine.fmr) / math.sqrt(spread * (1 / mine.fmr_effective_n + 1 / other.fmr_effective_n))
        )
    coverage, naive = inside / groups, naive_inside / groups
    rms_identity = math.sqrt(float(np.mean(np.square(z_identity))))
    rms_naive = math.sqrt(float(np.mean(np.square(z_naive))))
    with capsys.disabled():
        print(
            f"\ncalibration at {THRESHOLD}: {groups} sufficient groups; second-half FMR inside the first half's "
            f"interval: identity-level {coverage:.0%} ({inside}/{groups}), pair Wilson {naive:.0%}; "
            f"RMS of standardised differences: identity-level {rms_identity:.2f}, pair Wilson {rms_naive:.2f}"
        )

    # Then at least 80% of them fall inside
    assert groups >= 10
    assert coverage >= 0.8
