"""The review workbench's forms: the reviewer's worksheet, the review policy and training attestations."""

from __future__ import annotations

from typing import Any

from django import forms

from reviews.models import FEATURES, Conclusion, FeatureMark, ReviewItem, ReviewPolicy, TrainingAttestation


def _feature(label: str) -> forms.ChoiceField:
    return forms.ChoiceField(label=label, choices=FeatureMark.choices, widget=forms.RadioSelect)


class ReviewForm(forms.ModelForm):
    """The reviewer's worksheet: FISWG components, a conclusion, a reason and the bias acknowledgement.

    It takes what varies from one reviewer and item to the next from `instance.worksheet` (set by the admin's
    `get_object`): with `compare_only`, only the components are asked for (the scores stay hidden until they
    are in); with blockers, every field is disabled. Without a worksheet it is the whole form.
    """

    # One radio row per FISWG component, in the order of `reviews.models.FEATURES` (a test holds them together).
    feature_face_shape = _feature("Face shape")
    feature_hairline = _feature("Hairline")
    feature_forehead = _feature("Forehead")
    feature_eyebrows = _feature("Eyebrows")
    feature_eyes = _feature("Eyes")
    feature_nose = _feature("Nose")
    feature_ears = _feature("Ears")
    feature_mouth = _feature("Mouth")
    feature_chin_jaw = _feature("Chin and jaw")
    feature_marks_scars = _feature("Marks and scars")
    conclusion = forms.ChoiceField(choices=Conclusion.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Required. Say which features agree or disagree, and why.",
    )
    bias_acknowledged = forms.BooleanField(
        label="I have read the bias warning above and weighed it in my decision.",
        error_messages={"required": "Acknowledge the bias warning before deciding."},
    )
    corrects = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = ReviewItem
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        worksheet = getattr(self.instance, "worksheet", None)
        self.compare_only = worksheet is not None and worksheet.compare_only
        if worksheet is None:
            return
        for name, _ in FEATURES:
            self.fields[f"feature_{name}"].initial = worksheet.own_comparison.get(name)
        self.fields["corrects"].initial = worksheet.correction_of
        if self.compare_only:
            for name in ("conclusion", "reason", "bias_acknowledged", "corrects"):
                del self.fields[name]
        if worksheet.blockers:
            for field in self.fields.values():
                field.disabled = True
                field.required = False

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if len(reason) < 10:
            raise forms.ValidationError("Write a reason of at least a few words.")
        return reason

    def features(self) -> dict[str, str]:
        return {name: self.cleaned_data.get(f"feature_{name}", "") for name, _ in FEATURES}

    def decision(self) -> dict[str, Any]:
        """The decision, as `reviews.services.review_decide` takes it."""
        return {
            "conclusion": self.cleaned_data["conclusion"],
            "reason": self.cleaned_data["reason"],
            "features": self.features(),
            "bias_acknowledged": self.cleaned_data["bias_acknowledged"],
            "corrects_id": self.cleaned_data.get("corrects"),
        }


class PolicyForm(forms.ModelForm):
    class Meta:
        model = ReviewPolicy
        fields = ["required_confirmations", "hide_scores_until_compared", "training_valid_months", "senior_reviewer"]


class TrainingForm(forms.ModelForm):
    class Meta:
        model = TrainingAttestation
        fields = ["reviewer", "trained_on", "course"]
