from __future__ import annotations

from reviews.forms import ReviewForm
from reviews.models import FEATURES


def test_the_worksheet_asks_for_every_fiswg_component_in_order():
    # The components are declared one by one on the form; the services and the worksheet grid use FEATURES.
    rows = [(name, field.label) for name, field in ReviewForm.base_fields.items() if name.startswith("feature_")]

    assert rows == [(f"feature_{name}", label) for name, label in FEATURES]


def test_without_a_worksheet_the_form_asks_for_the_whole_decision():
    form = ReviewForm()

    assert not form.compare_only
    assert {"conclusion", "reason", "bias_acknowledged", "corrects"} <= set(form.fields)
    assert not any(field.disabled for field in form.fields.values())
