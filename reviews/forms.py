"""The review workbench's forms: the reviewer's worksheet, the review policy and training attestations."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from reviews.models import (
    FEATURES,
    Conclusion,
    FeatureMark,
    ProbeLimit,
    ProbeValue,
    ReviewItem,
    ReviewPolicy,
    TrainingAttestation,
)

ACKNOWLEDGEMENT = "I have read the bias warning shown here and weighed it in my decision."


def _feature(label: str) -> forms.ChoiceField:
    return forms.ChoiceField(label=label, choices=FeatureMark.choices, widget=forms.RadioSelect)


class ReviewForm(forms.ModelForm):
    """The reviewer's worksheet: FISWG components, a conclusion, a reason and the bias acknowledgement.

    It takes what varies from one reviewer and item to the next from `instance.worksheet` (set by the admin's
    `get_object`): with `analyse_only`, only the probe's value for comparison is asked for (ACE-V's analysis,
    before any candidate is shown); with `compare_only`, only the components (the scores stay hidden until
    they are in); with blockers, every field is disabled. Without a worksheet it is the whole form, without
    the analysis.
    """

    ANALYSIS_FIELDS = ("analysis_value", "analysis_limits", "analysis_note")

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
        label=ACKNOWLEDGEMENT,
        error_messages={"required": "Acknowledge the bias warning before deciding."},
    )
    corrects = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # Filled by the comparison page's script: the image tools used, and the marks made on the faces (JSON).
    tools = forms.CharField(required=False, widget=forms.HiddenInput)
    annotations = forms.CharField(required=False, widget=forms.HiddenInput)
    analysis_value = forms.ChoiceField(
        label="Value for comparison", choices=ProbeValue.choices, widget=forms.RadioSelect
    )
    analysis_limits = forms.MultipleChoiceField(
        label="What limits it", choices=ProbeLimit.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    analysis_note = forms.CharField(
        label="Note",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you see in the probe: e.g. motion blur across the eyes, a cap shadows the forehead.",
    )

    class Meta:
        model = ReviewItem
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        worksheet = getattr(self.instance, "worksheet", None)
        self.compare_only = worksheet is not None and worksheet.compare_only
        self.analyse_only = worksheet is not None and worksheet.analyse_only
        if self.analyse_only:
            for name in list(self.fields):
                if name not in self.ANALYSIS_FIELDS:
                    del self.fields[name]
            return
        for name in self.ANALYSIS_FIELDS:
            del self.fields[name]
        if worksheet is None:
            return
        for name, _ in FEATURES:
            self.fields[f"feature_{name}"].initial = worksheet.own_comparison.get(name)
        self.fields["corrects"].initial = worksheet.correction_of
        own = [mark for mark in worksheet.marks if mark.get("own")] if not worksheet.own_latest else []
        keys = ("face", "kind", "x", "y", "w", "h", "feature", "note")
        self.fields["annotations"].initial = json.dumps([{k: m[k] for k in keys if k in m} for m in own])
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

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.analyse_only and data.get("analysis_value") == ProbeValue.NO_VALUE:
            if not data.get("analysis_limits") and not (data.get("analysis_note") or "").strip():
                self.add_error(
                    "analysis_limits", "Say why the probe is of no value: choose what limits it, or write a note."
                )
        return data

    def _json(self, name: str, kind: type, what: str) -> Any:
        raw = self.cleaned_data.get(name) or ""
        if not raw:
            return kind()
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, kind):
            raise forms.ValidationError(f"The record of the {what} could not be read; reload the page and try again.")
        return value

    def clean_tools(self) -> dict[str, Any]:
        return self._json("tools", dict, "image tools used")

    def clean_annotations(self) -> list[Any]:
        return self._json("annotations", list, "marks on the faces")

    def features(self) -> dict[str, str]:
        return {name: self.cleaned_data.get(f"feature_{name}", "") for name, _ in FEATURES}

    def comparison(self) -> dict[str, Any]:
        """The comparison step, as `reviews.services.review_compare` takes it."""
        return {
            "features": self.features(),
            "tools": self.cleaned_data.get("tools") or {},
            "annotations": self.cleaned_data.get("annotations") or [],
        }

    def analysis(self) -> dict[str, Any]:
        """The probe's analysis, as `reviews.services.probe_analyse` takes it."""
        return {
            "value": self.cleaned_data["analysis_value"],
            "limits": list(self.cleaned_data.get("analysis_limits") or []),
            "note": self.cleaned_data.get("analysis_note", ""),
        }

    def decision(self) -> dict[str, Any]:
        """The decision, as `reviews.services.review_decide` takes it."""
        return {
            "conclusion": self.cleaned_data["conclusion"],
            "reason": self.cleaned_data["reason"],
            "features": self.features(),
            "bias_acknowledged": self.cleaned_data["bias_acknowledged"],
            "corrects_id": self.cleaned_data.get("corrects"),
            "tools": self.cleaned_data.get("tools") or {},
            "annotations": self.cleaned_data.get("annotations") or [],
        }


class PolicyForm(forms.ModelForm):
    class Meta:
        model = ReviewPolicy
        fields = [
            "required_confirmations",
            "hide_scores_until_compared",
            "analysis_scope",
            "training_valid_months",
            "senior_reviewer",
        ]


class TrainingForm(forms.ModelForm):
    class Meta:
        model = TrainingAttestation
        fields = ["reviewer", "trained_on", "course"]
