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
        default=False, help_text="Hide distance and rank until the reviewer has completed the feature comparison."
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


class FeatureComparison(models.Model):
    """The reviewer's feature-by-feature comparison, recorded before the scores are shown when policy hides them."""

    candidate = models.ForeignKey("matching.Candidate", on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    features = models.JSONField()
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
