from __future__ import annotations

from datetime import date

import pytest

from reviews.models import TrainingAttestation


@pytest.mark.parametrize(
    ("trained_on", "months", "until"),
    [
        (date(2026, 3, 15), 12, date(2027, 3, 15)),
        # The same day, not the 28th: a training on the 31st was cut three days short.
        (date(2026, 1, 31), 12, date(2027, 1, 31)),
        (date(2026, 5, 30), 1, date(2026, 6, 30)),
        (date(2026, 10, 31), 3, date(2027, 1, 31)),
        # A shorter month ends the validity on its last day.
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2027, 1, 31), 1, date(2027, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        # Leap days: to the leap day four years on, else to the end of February.
        (date(2028, 2, 29), 12, date(2029, 2, 28)),
        (date(2028, 2, 29), 48, date(2032, 2, 29)),
        (date(2027, 2, 28), 12, date(2028, 2, 28)),
        (date(2026, 12, 31), 14, date(2028, 2, 29)),
    ],
)
def test_training_is_valid_to_the_same_day_months_later_or_the_months_last_day(trained_on, months, until):
    attestation = TrainingAttestation(trained_on=trained_on)

    assert attestation.valid_until(months) == until
