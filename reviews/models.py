from __future__ import annotations

from datetime import date

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import models
from django.db.models import Q

from matching.models import Candidate

FEATURES = [
    ("face_shape", "Face shape"),
    ("hairline", "Hairline"),
    ("forehead", "Forehead"),
    ("eyebrows", "Eyebrows"),
    ("eyes", "Eyes"),
    ("nose", "Nose"),
    ("ears", "Ears"),
    ("mouth", "Mouth"),
    ("chin_jaw", "Chin and jaw"),
    ("marks_scars", "Marks and scars"),
]


class FeatureMark(models.TextChoices):
    SIMILAR = "similar", "Similar"
    DISSIMILAR = "dissimilar", "Dissimilar"
    NOT_VISIBLE = "not_visible", "Not visible"


class Conclusion(models.TextChoices):
    IDENTIFICATION = "identification", "Identification: the same person"
    PROBABLE = "probable", "Probable: probably the same person"
    INCONCLUSIVE = "inconclusive", "Inconclusive"
    PROBABLE_EXCLUSION = "probable_exclusion", "Probable exclusion: probably not the same person"
    EXCLUSION = "exclusion", "Exclusion: not the same person"


CONFIRMING = {Conclusion.IDENTIFICATION, Conclusion.PROBABLE}


class ProbeValue(models.TextChoices):
    """ACE-V's analysis: what the probe face is worth for comparison, judged before any candidate is seen."""

    OF_VALUE = "value", "Of value"
    LIMITED = "limited", "Of limited value"
    NO_VALUE = "none", "Of no value"


class ProbeLimit(models.TextChoices):
    """What limits the probe's value (FISWG's image factors)."""

    RESOLUTION = "resolution", "Resolution"
    BLUR = "blur", "Blur"
    POSE = "pose", "Pose"
    OCCLUSION = "occlusion", "Occlusion"
    LIGHTING = "lighting", "Lighting"
    AGE = "age", "Age of the image"


class AnalysisScope(models.TextChoices):
    EACH = "each", "Each reviewer records their own analysis of the probe before comparing"
    SHARED = "shared", "The first reviewer's analysis of the probe holds for every reviewer"


# The image tools of the comparison page, as the worksheet records their use (static/js/review-compare.js).
IMAGE_TOOLS = ("brightness", "contrast", "gamma", "greyscale", "mirror", "pixels")


class ReviewItem(Candidate):
    """A candidate as the reviewer's workbench sees it."""

    class Meta:
        proxy = True
        verbose_name = "review item"


class ReviewPolicy(models.Model):
    """How an organisation reviews candidates. Changed only through `review_policy_update`, which records it."""

    organisation = models.OneToOneField("portal.Organisation", on_delete=models.CASCADE, related_name="review_policy")
    required_confirmations = models.PositiveSmallIntegerField(
        default=2, help_text="Different reviewers who must confirm, independently, before a candidate is confirmed."
    )
    hide_scores_until_compared = models.BooleanField(
        default=True,
        help_text=(
            "Hide distance and rank until the reviewer has recorded the feature comparison. Turning this off "
            "costs independence: a reviewer who sees a close score first tends to anchor on it and find the "
            "features agree (confirmation bias), and a distant one to dismiss a true match."
        ),
    )
    analysis_scope = models.CharField(
        "probe analysis",
        max_length=10,
        choices=AnalysisScope.choices,
        default=AnalysisScope.EACH,
        help_text=(
            "Before comparing any candidate of a probe face, a reviewer judges the probe's value (ACE-V's "
            "analysis). With “each”, every reviewer records their own, blind to the others' until they have "
            "decided; with “shared”, the first one recorded holds for all. Either way, “of no value” "
            "closes every open candidate of that face as not comparable."
        ),
    )
    training_valid_months = models.PositiveSmallIntegerField(default=12)
    senior_reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Decides escalated candidates, beside the organisation's admins.",
    )

    class Meta:
        verbose_name_plural = "review policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(required_confirmations__gte=1) & Q(required_confirmations__lte=5),
                name="policy_confirmations_range",
            )
        ]

    def __str__(self) -> str:
        return f"Review policy of {self.organisation}"


class TrainingAttestation(models.Model):
    """An org admin's record that a reviewer completed facial-comparison training on a date."""

    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training")
    trained_on = models.DateField()
    course = models.CharField(max_length=200, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-trained_on", "-id"]

    def __str__(self) -> str:
        return f"{self.reviewer} trained on {self.trained_on:%Y-%m-%d}"

    def valid_until(self, months: int) -> date:
        """The same day `months` later, or that month's last day when it is shorter (31 Jan + 1 = 28 or 29 Feb)."""
        return self.trained_on + relativedelta(months=months)


class ReviewClaim(models.Model):
    """A reviewer saying "I am working on this one", so two reviewers don't do the same work by accident."""

    candidate = models.ForeignKey("matching.Candidate", on_delete=models.CASCADE, related_name="claims")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["candidate", "reviewer"], name="claim_unique")]

    def __str__(self) -> str:
        return f"Candidate {self.candidate_id} claimed by {self.reviewer}"


class ProbeAnalysis(models.Model):
    """A reviewer's analysis of a probe face before any comparison (ACE-V's A): its value, and why.

    One per reviewer and face. With the policy's shared scope the first one holds for every reviewer. The
    portal's own measures are stored as they were shown beside the call.
    """

    face = models.ForeignKey("matching.Face", on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    value = models.CharField(max_length=10, choices=ProbeValue.choices)
    limits = models.JSONField(default=list, help_text="What limits its value: resolution, blur, pose, …")
    note = models.TextField(blank=True)
    measures = models.JSONField(default=dict, help_text="The portal's measures as shown beside the call.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "probe analyses"
        constraints = [
            models.UniqueConstraint(fields=["face", "reviewer"], name="probe_analysis_once"),
            models.CheckConstraint(
                condition=~Q(value="none") | ~Q(note="") | ~Q(limits=[]), name="probe_no_value_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_value_display()}: face {self.face_id} by {self.reviewer}"

    @property
    def limit_labels(self) -> list[str]:
        labels = dict(ProbeLimit.choices)
        return [labels.get(limit, limit) for limit in self.limits]

    @property
    def summary(self) -> str:
        """ "Of limited value (blur, pose): note"."""
        text = self.get_value_display()
        if self.limits:
            text += f" ({', '.join(label.lower() for label in self.limit_labels)})"
        return f"{text}: {self.note}" if self.note else text


class FeatureComparison(models.Model):
    """The reviewer's feature-by-feature comparison, recorded before the scores are shown when policy hides them."""

    candidate = models.ForeignKey("matching.Candidate", on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    features = models.JSONField()
    # As on the decision: the image tools used and the marks made while comparing; the decision carries them on.
    tools = models.JSONField(default=dict)
    annotations = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Comparison of candidate {self.candidate_id} by {self.reviewer}"


class ReviewDecision(models.Model):
    """A reviewer's decision on a candidate. Rows are only ever added; a correction is a new row."""

    candidate = models.ForeignKey("matching.Candidate", on_delete=models.PROTECT, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    conclusion = models.CharField(max_length=20, choices=Conclusion.choices, default=Conclusion.INCONCLUSIVE)
    features = models.JSONField(default=dict, help_text="FISWG component → similar / dissimilar / not visible.")
    tools = models.JSONField(
        default=dict, help_text="The image tools used on each face (probe, gallery): brightness, mirror, …"
    )
    annotations = models.JSONField(
        default=list,
        help_text="Points and regions marked on either face, each tied to a FISWG component with a note.",
    )
    reason = models.TextField()
    bias_acknowledged = models.BooleanField(default=False)
    bias_snapshot = models.JSONField(default=dict, help_text="The bias warning as the reviewer saw it.")
    training_valid_until = models.DateField(null=True, blank=True)
    escalation = models.BooleanField(default=False, help_text="A senior decision on an escalated candidate.")
    corrects = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=~models.Q(reason=""), name="decision_has_reason")]

    def __str__(self) -> str:
        return f"{self.get_conclusion_display()} by {self.reviewer} on candidate {self.candidate_id}"

    @property
    def confirms(self) -> bool:
        return self.conclusion in CONFIRMING


class DisclosureStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Generating"
    DONE = "done", "Ready"
    FAILED = "failed", "Failed"
    WITHDRAWN = "withdrawn", "Withdrawn"


class DisclosureReport(models.Model):
    """Everything the portal did and decided for one case, for disclosure."""

    case = models.ForeignKey("matching.Case", on_delete=models.CASCADE, related_name="disclosures")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=DisclosureStatus.choices, default=DisclosureStatus.QUEUED)
    failure_reason = models.CharField(max_length=500, blank=True)
    html = models.FileField(upload_to="disclosures/%Y/%m/", max_length=300, blank=True)
    pdf = models.FileField(upload_to="disclosures/%Y/%m/", max_length=300, blank=True)
    # Why a report that is done has no PDF (the worker could not print one); its HTML is whole.
    pdf_failure_reason = models.CharField("PDF", max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when an erasure or a purge took images out of an earlier version of this report.
    regenerated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Disclosure report {self.pk} for case {self.case_id}"


class Severity(models.TextChoices):
    """The bias panel's label, from its headline figure (see reviews.bias): never a label its number contradicts."""

    WEAK = "weak", "Weak evidence"
    HIGH = "high", "High risk"
    ELEVATED = "elevated", "Elevated"
    STANDARD = "standard", "Standard"
    UNMEASURED = "unmeasured", "Not measured"
    UNKNOWN = "unknown", "No valid audit"


class CandidateWarning(models.Model):
    """The bias panel's severity for a candidate under one audit run: a cache for filtering the queue.

    The panel itself is always computed afresh from the stored audit rows; this row only lets the queue filter
    by severity without computing every panel on every page load.
    """

    candidate = models.OneToOneField("matching.Candidate", on_delete=models.CASCADE, related_name="warning")
    severity = models.CharField(max_length=10, choices=Severity.choices, db_index=True)
    run_id = models.BigIntegerField(null=True)
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.get_severity_display()} for candidate {self.candidate_id}"
