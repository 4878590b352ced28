"""The comparison page's template filters."""

from __future__ import annotations

import pytest
from django import forms

from reviews.forms import ReviewForm
from reviews.models import FEATURES
from reviews.templatetags.review_bench import input_tag


class _Choices(forms.Form):
    value = forms.ChoiceField(choices=[("a", "A & B"), ("b", 'Say "b"'), (3, "three")], widget=forms.RadioSelect)
    limits = forms.MultipleChoiceField(
        choices=[("pose", "Pose"), ("light", "Light")], widget=forms.CheckboxSelectMultiple, required=False
    )
    odd = forms.ChoiceField(
        choices=[("x", "X")],
        widget=forms.RadioSelect(attrs={"data-note": 'a "quoted" <value> & more', "data-on": True, "data-off": False}),
        disabled=True,
    )


def _forms():
    features = {f"feature_{name}": "similar" for name, _ in FEATURES}
    yield _Choices()
    yield _Choices(data={"value": "b", "limits": ["pose", "light"], "odd": "x"})
    yield _Choices(data={"value": "nonsense"})  # bound with errors
    yield ReviewForm()
    yield ReviewForm(data={**features, "conclusion": "identification", "reason": "x"})


@pytest.mark.parametrize("form", list(_forms()), ids=lambda form: f"{type(form).__name__}-{form.is_bound}")
def test_the_inputs_are_those_djangos_own_template_writes(db, form):
    # Given every radio button and checkbox of the form, bound or not
    options = [option for field in form for option in field.subwidgets if "type" in option.data]
    assert options

    # Then each is written as Django's input template writes it
    for option in options:
        assert input_tag(option) == option.tag(), option.data["name"]
