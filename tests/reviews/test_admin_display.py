"""What the review queue's columns show (reviews/admin_display.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reviews.admin_display import _age


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (timedelta(seconds=-5), "0\xa0minutes"),  # a clock a little behind the database's
        (timedelta(seconds=59), "0\xa0minutes"),
        (timedelta(minutes=1), "1\xa0minute"),
        (timedelta(minutes=59, seconds=59), "59\xa0minutes"),
        (timedelta(hours=1), "1\xa0hour"),
        (timedelta(hours=23, minutes=59), "23\xa0hours"),
        (timedelta(days=1), "1\xa0day"),
        (timedelta(days=8, hours=23), "8\xa0days"),
    ],
)
def test_an_items_wait_is_shown_in_its_largest_whole_unit(age, shown):
    # Given an item that has waited `age`; when the queue shows it; then it reads in one unit, rounded down
    assert _age(age) == shown
