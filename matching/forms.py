from __future__ import annotations

from django import forms
from django.conf import settings

from matching.imaging import ImageRejected
from matching.models import REFERENCE_CHARACTERS, AgeBand, Ethnicity, Sex, date_problem, reference_problem
from matching.services import UploadedImage, uploaded_image_read


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class PhotosField(forms.FileField):
    """Several photos in one field; each is checked and normalised before anything is stored."""

    widget = MultipleFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"})

    def clean(self, data, initial=None) -> list[UploadedImage]:
        files = data if isinstance(data, (list, tuple)) else ([data] if data else [])
        if not files:
            raise forms.ValidationError("Add at least one photo.")
        if len(files) > settings.UPLOAD_MAX_FILES:
            raise forms.ValidationError(f"At most {settings.UPLOAD_MAX_FILES} photos at a time.")
        images, errors = [], []
        for upload in files:
            try:
                images.append(uploaded_image_read(upload))
            except ImageRejected as error:
                errors.append(str(error))
        if errors:
            raise forms.ValidationError(errors)
        return images


class PastDateField(forms.DateField):
    """An optional date in ISO form (YYYY-MM-DD), not in the future and not before 1900."""

    def __init__(self, *, what: str, **kwargs) -> None:
        self.what = what
        kwargs.setdefault("required", False)
        kwargs.setdefault("input_formats", ["%Y-%m-%d"])
        kwargs.setdefault("widget", forms.DateInput(attrs={"type": "date", "min": "1900-01-01"}, format="%Y-%m-%d"))
        kwargs.setdefault("error_messages", {"invalid": f"Enter the {what} as a date, YYYY-MM-DD (e.g. 2019-06-30)."})
        super().__init__(**kwargs)

    def validate(self, value) -> None:
        super().validate(value)
        problem = date_problem(value, self.what)
        if problem:
            raise forms.ValidationError(problem, code="invalid")


def _captured_on(label: str) -> PastDateField:
    return PastDateField(
        what="date the photos were taken",
        label=label,
        help_text="Optional, where known: the day these photos were taken (YYYY-MM-DD). A reviewer weighs the "
        "years between two photos, above all of a child.",
    )


def _reference_check(value: str) -> None:
    problem = reference_problem(value)
    if problem:
        raise forms.ValidationError(problem, code="invalid")


class CaseForm(forms.Form):
    reference = forms.CharField(
        label="Reference number",
        max_length=100,
        validators=[_reference_check],
        help_text=f"Your organisation's case number: {REFERENCE_CHARACTERS}, beginning and ending with a letter or "
        "digit (e.g. MP-2026/0042).",
    )
    title = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=10_000)
    purpose = forms.CharField(
        max_length=500, help_text="Why this search is being made, e.g. “locate missing child reported 2026-11-20”."
    )
    probe_sex = forms.ChoiceField(label="Sex of the person sought", choices=Sex.choices, required=False)
    probe_age_band = forms.ChoiceField(label="Age band", choices=AgeBand.choices, required=False)
    probe_ethnicity = forms.ChoiceField(label="Race/ethnicity", choices=Ethnicity.choices, required=False)
    photos = PhotosField(label="Probe photos", help_text="JPEG, PNG or WebP. One or more.")
    captured_on = _captured_on("Date taken")


class GalleryForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5_000)


class SubjectForm(forms.Form):
    code = forms.CharField(label="Reference code", max_length=100)
    display_name = forms.CharField(max_length=200, required=False)
    sex = forms.ChoiceField(choices=Sex.choices, required=False)
    age_band = forms.ChoiceField(choices=AgeBand.choices, required=False)
    ethnicity = forms.ChoiceField(label="Race/ethnicity", choices=Ethnicity.choices, required=False)
    born_on = PastDateField(
        what="date of birth",
        label="Date of birth",
        help_text="Optional: with the date a photo was taken it gives the subject's age in it. Kept for a "
        "subject already enrolled with one.",
    )
    photos = PhotosField(label="Reference photos", help_text="Each photo must show this person alone.")
    captured_on = _captured_on("Date taken")

    def clean(self):
        data = super().clean()
        born, taken = data.get("born_on"), data.get("captured_on")
        if born and taken and taken < born:
            self.add_error("captured_on", f"The photos cannot be taken ({taken:%Y-%m-%d}) before the date of birth.")
        return data


class BulkEnrolForm(forms.Form):
    archive = forms.FileField(label="Photos (zip)", widget=forms.ClearableFileInput(attrs={"accept": ".zip"}))
    manifest = forms.FileField(
        label="Manifest (CSV)",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
        help_text="Columns: code and file (required); display_name, sex (F/M), age_band (0-9, 10-17, 18-29, 30-44, "
        "45-59, 60+), ethnicity (Asian, Black, Indian, White, Others), born_on (date of birth) and captured_on (date "
        "the photo was taken), both YYYY-MM-DD: all optional, blank or unknown = unknown. Also accepted: "
        "subject_code for code, file_name for file, name for display_name, race for ethnicity, date_of_birth for "
        "born_on, date_taken for captured_on.",
    )


class AuditUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    archive = forms.FileField(label="Photos (zip)")
    manifest = forms.FileField(
        label="Manifest (CSV)",
        help_text="Columns: file, identity, and any demographic columns (e.g. sex, race, age_band). Blank = unknown.",
    )
    shared = forms.BooleanField(required=False, label="Share with every organisation (superusers only)")


class OrganisationSettingsForm(forms.Form):
    distance_threshold = forms.FloatField(min_value=0.05, max_value=1.5)
    max_candidates = forms.IntegerField(min_value=1, max_value=50)
    target_fmr = forms.FloatField(label="Target false match rate", min_value=1e-6, max_value=0.5)
    fpir_ceiling = forms.FloatField(
        label="Ceiling on strangers' searches returning a candidate",
        min_value=0.01,
        max_value=0.99,
        help_text="The proposed threshold keeps, for every group the audit measures, the top of the 95% interval of "
        "the share of searches for a stranger that return a candidate at or under this. 0.5: fewer than half.",
    )
    audit_max_age_days = forms.IntegerField(label="Audit valid for (days)", min_value=1, max_value=3650)
    require_valid_audit = forms.BooleanField(label="Block confirmations without a valid audit", required=False)


class ThresholdConfirmForm(forms.Form):
    threshold = forms.FloatField(label="Threshold to confirm", min_value=0.05, max_value=1.5)
    understood = forms.BooleanField(
        label="I have read what this threshold means for searches of this gallery, shown on this page",
        required=True,
    )
