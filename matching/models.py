from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import ExpressionWrapper, F, Q


class Sex(models.TextChoices):
    UNKNOWN = "", "Unknown"
    FEMALE = "F", "Female"
    MALE = "M", "Male"


class AgeBand(models.TextChoices):
    UNKNOWN = "", "Unknown"
    B0_9 = "0-9", "0-9"
    B10_17 = "10-17", "10-17"
    B18_29 = "18-29", "18-29"
    B30_44 = "30-44", "30-44"
    B45_59 = "45-59", "45-59"
    B60 = "60+", "60+"


class Ethnicity(models.TextChoices):
    UNKNOWN = "", "Unknown"
    ASIAN = "Asian", "Asian"
    BLACK = "Black", "Black"
    INDIAN = "Indian", "Indian"
    WHITE = "White", "White"
    OTHER = "Others", "Other"


# Dates of birth and capture dates: none in the future, none before this (a typo, not a photo of 1850).
EARLIEST_DATE = date(1900, 1, 1)


def date_problem(value: date | None, what: str, *, today: date | None = None) -> str | None:
    """Why `value` cannot be a date of birth or a capture date; None when it can (or is unknown)."""
    if value is None:
        return None
    from django.utils import timezone

    today = today or timezone.localdate()
    if value > today:
        return f"The {what} {value:%Y-%m-%d} is in the future."
    if value < EARLIEST_DATE:
        return f"The {what} {value:%Y-%m-%d} is before {EARLIEST_DATE:%Y}; check the year."
    return None


# Case references name files (the disclosure report) and head mail subjects, and people read them in lists: they
# hold nothing that a file system, a header or the text direction reads as syntax. The README lists the same set.
REFERENCE_CHARACTERS = "letters A-Z and a-z, digits 0-9, spaces and - _ . /"
_REFERENCE_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_./")


def _character_shown(character: str) -> str:
    """A character as a message can show it: quoted if it is visible on its own, else its code point and name."""
    if unicodedata.category(character)[0] not in "CZM":
        return f"“{character}”"
    name = unicodedata.name(character, "")
    return f"U+{ord(character):04X} {name}".rstrip()


def reference_problem(reference: str) -> str | None:
    """Why `reference` cannot be a case's reference; None when it can."""
    refused = list(dict.fromkeys(c for c in reference if c not in _REFERENCE_ALLOWED))
    if refused:
        shown = [_character_shown(c) for c in refused]
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
        return f"A reference may hold only {REFERENCE_CHARACTERS}; this one holds {listed}."
    if not (reference[:1].isalnum() and reference[-1:].isalnum()):
        return "A reference must begin and end with a letter or a digit."
    return None


def years_between(earlier: date, later: date) -> int:
    """Whole years from `earlier` to `later` (a birthday not yet reached this year does not count)."""
    return later.year - earlier.year - ((later.month, later.day) < (earlier.month, earlier.day))


class Gallery(models.Model):
    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="galleries")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "galleries"
        constraints = [models.UniqueConstraint(fields=["organisation", "name"], name="gallery_unique_name")]

    def __str__(self) -> str:
        return self.name


class Subject(models.Model):
    gallery = models.ForeignKey(Gallery, on_delete=models.CASCADE, related_name="subjects")
    code = models.CharField("reference code", max_length=100)
    display_name = models.CharField(max_length=200, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, blank=True, default=Sex.UNKNOWN)
    age_band = models.CharField(max_length=5, choices=AgeBand.choices, blank=True, default=AgeBand.UNKNOWN)
    ethnicity = models.CharField(
        "race/ethnicity", max_length=10, choices=Ethnicity.choices, blank=True, default=Ethnicity.UNKNOWN
    )
    # Optional: with each photo's capture date it gives the subject's age in that photo.
    born_on = models.DateField("date of birth", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["gallery", "code"], name="subject_unique_code")]

    def __str__(self) -> str:
        return f"{self.code} {self.display_name}".strip()


class Case(models.Model):
    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="cases")
    reference = models.CharField("reference number", max_length=100)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    purpose = models.CharField(max_length=500, help_text="Why this search is being made.")
    # What the caseworker knows of the person sought; optional, and used only
    # to pick the bias warnings shown to reviewers.
    probe_sex = models.CharField(max_length=1, choices=Sex.choices, blank=True, default=Sex.UNKNOWN)
    probe_age_band = models.CharField(max_length=5, choices=AgeBand.choices, blank=True, default=AgeBand.UNKNOWN)
    probe_ethnicity = models.CharField(max_length=10, choices=Ethnicity.choices, blank=True, default=Ethnicity.UNKNOWN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # The person answerable for the case: its creator, or for a case filed through an organisation API key,
    # the person who made the key. Separation of duties keeps both away from the case's candidates.
    accountable_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    close_reason = models.TextField(blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["organisation", "reference"], name="case_unique_reference")]

    def __str__(self) -> str:
        return f"{self.reference}: {self.title}"

    @property
    def reference_for_files(self) -> str:
        """The reference as a file name may carry it: ASCII letters, digits, hyphens and underscores, at most 60.

        Accents are dropped and any other run of characters becomes one hyphen. References stored before they
        were limited (`reference_problem`) may hold anything, so this never trusts the rule; it may be empty."""
        decomposed = unicodedata.normalize("NFKD", self.reference)
        unaccented = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        return re.sub(r"[^A-Za-z0-9_]+", "-", unaccented).strip("-")[:60].strip("-")

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None

    @property
    def purge_due_at(self):
        """When the retention sweep purges this closed case's biometrics; None while open or kept indefinitely."""
        from datetime import timedelta

        retention_days = self.organisation.retention_days
        if self.closed_at is None or self.purged_at is not None or retention_days is None:
            return None
        return self.closed_at + timedelta(days=retention_days)


class PhotoKind(models.TextChoices):
    PROBE = "probe", "Probe"
    REFERENCE = "reference", "Reference"


class PhotoStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    DETECTING = "detecting", "Detecting faces"
    MATCHING = "matching", "Matching"
    HELD = "held", "Waiting for the organisation's threshold to be confirmed"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Photo(models.Model):
    """A probe photo of a case, or a reference photo of a gallery subject."""

    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="photos")
    kind = models.CharField(max_length=10, choices=PhotoKind.choices)
    case = models.ForeignKey(Case, null=True, blank=True, on_delete=models.CASCADE, related_name="photos")
    subject = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="photos")
    image = models.FileField(upload_to="photos/%Y/%m/", max_length=300)
    original_name = models.CharField(max_length=255, blank=True)
    # When the photo was taken, where known: a reviewer weighs the years between two photos of a child.
    captured_on = models.DateField("date taken", null=True, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=PhotoStatus.choices, default=PhotoStatus.QUEUED, db_index=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    # The upload as received, metadata and all; kept only when the organisation opts in.
    original = models.FileField(upload_to="originals/%Y/%m/", max_length=300, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="probe", case__isnull=False, subject__isnull=True))
                | (Q(kind="reference", case__isnull=True, subject__isnull=False)),
                name="photo_kind_owner",
            ),
            models.CheckConstraint(
                condition=~Q(status="failed") | ~Q(failure_reason=""), name="photo_failed_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} photo {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in (PhotoStatus.DONE, PhotoStatus.FAILED)

    NO_FACE_NOTICE = "No search ran; try a clearer photo."

    @property
    def no_face(self) -> bool:
        """Finished without finding a face, so nothing was searched: not the same as a search that found nobody.

        Uses a `face_count` annotation where the query made one (the case page's does)."""
        if self.status != PhotoStatus.DONE:
            return False
        count = getattr(self, "face_count", None)
        return (count if count is not None else self.faces.count()) == 0

    def age_at_capture(self) -> int | None:
        """The subject's age in whole years when this reference photo was taken, where both dates are known."""
        subject = self.subject
        if subject is None or subject.born_on is None or self.captured_on is None:
            return None
        return years_between(subject.born_on, self.captured_on)


# A face whose biometrics may still be used or shown: not purged, of a photo not purged, and (reference faces) of
# a subject not erased. A row of a face that is gone is kept for history, never served.
FACE_LIVE = Q(purged_at__isnull=True, photo__purged_at__isnull=True) & (
    Q(subject__isnull=True) | Q(subject__erased_at__isnull=True)
)


class FaceQuerySet(models.QuerySet["Face"]):
    def live(self) -> FaceQuerySet:
        """The faces that are live (FACE_LIVE)."""
        return self.filter(FACE_LIVE)

    def with_liveness(self) -> FaceQuerySet:
        """Every face, each with `is_live`: the same rule as a column, for a page that shows a gone face as
        gone (an EXISTS over `live()` per face took half a millisecond longer to build)."""
        return self.annotate(is_live=ExpressionWrapper(FACE_LIVE, output_field=models.BooleanField()))


class Face(models.Model):
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="faces")
    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="+")
    # Set on reference faces, so that the gallery matrix loads in one query.
    subject = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="faces")
    index = models.PositiveSmallIntegerField(help_text="Position of this face in the photo's detections.")
    top = models.PositiveIntegerField()
    right = models.PositiveIntegerField()
    bottom = models.PositiveIntegerField()
    left = models.PositiveIntegerField()
    crop = models.FileField(upload_to="crops/%Y/%m/", max_length=300)
    # What a reviewer is shown, made with the crop (empty for faces detected before they were stored, and for
    # evaluation faces): the face turned to fixed eye positions, and a 96 px thumbnail for lists.
    aligned = models.FileField(upload_to="aligned/%Y/%m/", max_length=300, blank=True)
    thumbnail = models.FileField(upload_to="thumbnails/%Y/%m/", max_length=300, blank=True)
    # Encrypted (matching.sealing); emptied when the face is purged by retention or erasure.
    encoding = models.BinaryField()
    purged_at = models.DateTimeField(null=True, blank=True)
    engine = models.CharField(max_length=40)
    engine_version = models.CharField(max_length=60, db_index=True)
    detector = models.CharField(max_length=10)
    face_width = models.PositiveIntegerField(help_text="Box width in pixels of the stored photo.")
    face_height = models.PositiveIntegerField(help_text="Box height in pixels of the stored photo.")
    blur = models.FloatField(help_text="Variance of the Laplacian of the crop; lower is blurrier.")
    # A probe face a reviewer judged of no value for comparison (the review's analysis step): its candidates
    # were closed as not comparable, and the caseworker's page says so.
    unsuitable_at = models.DateTimeField(null=True, blank=True)
    unsuitable_reason = models.CharField(max_length=600, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FaceQuerySet.as_manager()

    class Meta:
        ordering = ["photo_id", "index"]
        constraints = [models.UniqueConstraint(fields=["photo", "index"], name="face_unique_index")]

    def __str__(self) -> str:
        return f"Face {self.index + 1} of photo {self.photo_id}"

    @property
    def vector(self) -> np.ndarray:
        from matching.sealing import encoding_open

        return encoding_open(self.encoding)

    @property
    def size_px(self) -> int:
        return min(self.face_width, self.face_height)


class GalleryChangeKind(models.TextChoices):
    ADD = "add", "Added"
    REMOVE = "remove", "Removed"
    NONE = "none", "No face"


class GalleryChange(models.Model):
    """The change log every worker's cached gallery catches up from: one row per face that entered or left the
    organisation's searchable gallery, at the gallery version (`seq`) that its transaction set.

    The transaction that bumps `Organisation.gallery_version` holds the organisation's row until it commits, so the
    versions of one organisation commit in order: a process that has applied every change up to version n and
    reads rows n+1..m has seen every change up to m. A version without a row (a bump made elsewhere) makes the
    reader load the gallery again.
    """

    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveBigIntegerField()
    # A plain id, not a foreign key: the row outlives the face's biometrics, and readers never join.
    face_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=6, choices=GalleryChangeKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["organisation", "seq"], name="gallery_change_org_seq")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} face {self.face_id} at gallery version {self.seq}"


class Search(models.Model):
    """One gallery search for one probe face. Zero candidates is a result too."""

    face = models.OneToOneField(Face, on_delete=models.CASCADE, related_name="search")
    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="+")
    threshold = models.FloatField()
    max_candidates = models.PositiveSmallIntegerField()
    engine_version = models.CharField(max_length=60)
    gallery_version = models.PositiveBigIntegerField()
    gallery_faces = models.PositiveIntegerField()
    candidate_count = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "searches"

    def __str__(self) -> str:
        return f"Search for {self.face}"


class Outcome(models.TextChoices):
    PENDING = "pending", "Pending review"
    ESCALATED = "escalated", "Escalated: reviewers disagreed"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"
    # Nobody compared it: the probe face was judged of no value for comparison before any comparison.
    UNSUITABLE = "unsuitable", "Not comparable: probe photo unsuitable"


# The one definition of an open candidate: a reviewer may still decide it. Everything else asks the model.
_OPEN_OUTCOMES = (Outcome.PENDING, Outcome.ESCALATED)


class CandidateQuerySet(models.QuerySet["Candidate"]):
    def open(self) -> CandidateQuerySet:
        """Candidates still waiting for a decision (pending, or escalated after a disagreement)."""
        return self.filter(Candidate.open_q())

    def decided(self) -> CandidateQuerySet:
        """Candidates closed for good: confirmed or rejected."""
        return self.exclude(Candidate.open_q())

    def confirmed(self) -> CandidateQuerySet:
        """Candidates a reviewer confirmed: the only ones a caseworker may see."""
        return self.filter(outcome=Outcome.CONFIRMED)


class Candidate(models.Model):
    """A gallery subject within the threshold of a probe face: a lead, until a reviewer says otherwise."""

    search = models.ForeignKey(Search, on_delete=models.CASCADE, related_name="candidates")
    organisation = models.ForeignKey("portal.Organisation", on_delete=models.CASCADE, related_name="+")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="candidates")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="candidates")
    reference_face = models.ForeignKey(Face, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveSmallIntegerField()
    distance = models.FloatField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING, db_index=True)
    outcome_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome_reason = models.TextField(blank=True)
    outcome_at = models.DateTimeField(null=True, blank=True)
    # Every reviewer whose confirmation made this a match; outcome_by is only the one who settled it.
    confirmed_by = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = CandidateQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["search", "subject"], name="candidate_unique_subject"),
            models.UniqueConstraint(fields=["search", "rank"], name="candidate_unique_rank"),
            models.CheckConstraint(
                condition=Q(outcome__in=list(_OPEN_OUTCOMES)) | (Q(outcome_at__isnull=False) & ~Q(outcome_reason="")),
                name="candidate_decided_has_reason",
            ),
        ]

    def __str__(self) -> str:
        # No rank: blind review hides it until the comparison is recorded, and the admin writes an object's name
        # into pages' titles and headings.
        return f"Candidate {self.pk} (case {self.case_id})"

    @staticmethod
    def open_q(prefix: str = "") -> Q:
        """The condition "open", for filters and annotations (`prefix` reaches it through a relation)."""
        return Q(**{f"{prefix}outcome__in": list(_OPEN_OUTCOMES)})

    @property
    def is_open(self) -> bool:
        return self.outcome in _OPEN_OUTCOMES

    @property
    def probe_face(self) -> Face:
        return self.search.face

    @property
    def confirming_reviewers(self) -> list[Any]:
        """Who confirmed this match: each confirming reviewer, or, for rows from before that was kept, the last."""
        reviewers = list(self.confirmed_by.all())
        return reviewers or ([self.outcome_by] if self.outcome_by_id else [])


class BatchStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RowImport(models.Model):
    """An upload worked through row by row in a background task, with a report entry per row.

    The task claims it (queued or running: a rerun resumes), appends to `report` as it goes, and ends it done
    or failed. Pages poll `progress()` until it is finished.
    """

    status = models.CharField(max_length=10, choices=BatchStatus.choices, default=BatchStatus.QUEUED)
    failure_reason = models.CharField(max_length=500, blank=True)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # The report status of a row that went in, as the summary names it.
    accepted_status = "accepted"

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_finished(self) -> bool:
        return self.status in (BatchStatus.DONE, BatchStatus.FAILED)

    def rows_with(self, status: str) -> int:
        return sum(1 for row in self.report if row.get("status") == status)

    @property
    def accepted_count(self) -> int:
        return self.rows_with(self.accepted_status)

    @property
    def refused_count(self) -> int:
        return self.rows_with("refused")

    @property
    def summary(self) -> str:
        return f"{self.accepted_count} {self.accepted_status}, {self.refused_count} refused"

    def progress(self) -> dict[str, object]:
        """What the page's poller reads."""
        return {
            "status": self.status,
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
            "finished": self.is_finished,
        }


class EnrolmentBatch(RowImport):
    """A zip of photos and a CSV, enrolled in the background with a report per row."""

    gallery = models.ForeignKey(Gallery, on_delete=models.CASCADE, related_name="batches")
    # The uploaded bytes live only until the import finishes; the per-row report stays.
    archive = models.FileField(upload_to="batches/%Y/%m/", max_length=300, blank=True)
    manifest = models.FileField(upload_to="batches/%Y/%m/", max_length=300, blank=True)

    accepted_status = "enrolled"

    class Meta(RowImport.Meta):
        verbose_name_plural = "enrolment batches"

    def __str__(self) -> str:
        return f"Enrolment batch {self.pk} into {self.gallery}"


# Bias audits: labelled evaluation sets, and the error rates measured on them


class AuditDataset(RowImport):
    """A labelled evaluation set: photos with identities and free-text demographic columns."""

    organisation = models.ForeignKey(
        "portal.Organisation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="audit_datasets",
        help_text="Empty for a set shared with every organisation.",
    )
    name = models.CharField(max_length=200)
    attributes = models.JSONField(default=list, help_text="The demographic columns, in manifest order.")
    engine_version = models.CharField(max_length=60, blank=True)
    archive = models.FileField(upload_to="audits/%Y/%m/", max_length=300, blank=True)
    manifest = models.FileField(upload_to="audits/%Y/%m/", max_length=300, blank=True)

    def __str__(self) -> str:
        return self.name


class AuditSample(models.Model):
    dataset = models.ForeignKey(AuditDataset, on_delete=models.CASCADE, related_name="samples")
    line = models.PositiveIntegerField()
    file = models.CharField(max_length=300)
    identity = models.CharField(max_length=200)
    attributes = models.JSONField(default=dict)
    encoding = models.BinaryField()

    class Meta:
        ordering = ["line"]
        constraints = [models.UniqueConstraint(fields=["dataset", "line"], name="audit_sample_unique_line")]

    def __str__(self) -> str:
        return f"{self.file} ({self.identity})"


class AuditRun(models.Model):
    """Error rates measured on one dataset, for one organisation's threshold and target, with one engine."""

    dataset = models.ForeignKey(AuditDataset, on_delete=models.PROTECT, related_name="runs")
    organisation = models.ForeignKey(
        "portal.Organisation", null=True, blank=True, on_delete=models.CASCADE, related_name="audit_runs"
    )
    engine_version = models.CharField(max_length=60, db_index=True)
    thresholds = models.JSONField(default=list)
    threshold_in_use = models.FloatField()
    target_fmr = models.FloatField()
    min_identities = models.PositiveIntegerField()
    min_effective_pairs = models.PositiveIntegerField()
    photos = models.PositiveIntegerField()
    # How the 95% intervals were computed; runs from before identity-level intervals say "pair Wilson".
    interval_method = models.CharField(max_length=200, default="pair Wilson")
    # Each person of the run, in the order of the "all" group's pairs: [photos, {attribute: value}]. With that
    # group's impostor pairs it gives the 1:N figures across groups; empty for runs whose photos were erased
    # before it was kept.
    people = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-completed_at", "-id"]

    def __str__(self) -> str:
        return f"Audit {self.pk} of {self.dataset}"


class AuditGroup(models.Model):
    run = models.ForeignKey(AuditRun, on_delete=models.CASCADE, related_name="groups")
    key = models.CharField(max_length=300)
    attributes = models.JSONField(default=dict)
    photos = models.PositiveIntegerField()
    identities = models.PositiveIntegerField()
    impostor_pairs = models.PositiveIntegerField()
    genuine_pairs = models.PositiveIntegerField()
    insufficient = models.BooleanField()
    insufficient_reasons = models.JSONField(default=list)
    threshold_at_target = models.FloatField(null=True)
    fnmr_at_target = models.FloatField(null=True)
    target_fmr_resolvable = models.BooleanField(default=False)
    # Sorted float32, so that the rate at any distance can be read back exactly.
    impostor_distances = models.BinaryField()
    genuine_distances = models.BinaryField()
    # The (group-local) people of each pair, in the same order: int32 pairs for impostors, one int32 per
    # genuine pair. Identity-level intervals at any distance need them; empty for older runs.
    impostor_people = models.BinaryField(default=b"")
    genuine_people = models.BinaryField(default=b"")
    effective_pairs = models.FloatField(null=True, help_text="Effective n of the FMR at the run's threshold.")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="audit_group_unique_key")]

    def __str__(self) -> str:
        return self.key

    @property
    def impostor_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.impostor_distances), dtype=np.float32)

    @property
    def genuine_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.genuine_distances), dtype=np.float32)

    @property
    def impostor_people_array(self) -> np.ndarray | None:
        """(M, 2) people of each impostor pair, or None for a run stored before they were kept."""
        raw = bytes(self.impostor_people or b"")
        if not raw and self.impostor_pairs:
            return None
        return np.frombuffer(raw, dtype=np.int32).reshape(-1, 2)

    @property
    def genuine_people_array(self) -> np.ndarray | None:
        raw = bytes(self.genuine_people or b"")
        if not raw and self.genuine_pairs:
            return None
        return np.frombuffer(raw, dtype=np.int32)


class AuditRate(models.Model):
    group = models.ForeignKey(AuditGroup, on_delete=models.CASCADE, related_name="rates")
    threshold = models.FloatField()
    false_matches = models.PositiveIntegerField()
    impostor_pairs = models.PositiveIntegerField()
    fmr = models.FloatField(null=True)
    fmr_low = models.FloatField(null=True)
    fmr_high = models.FloatField(null=True)
    false_non_matches = models.PositiveIntegerField()
    genuine_pairs = models.PositiveIntegerField()
    fnmr = models.FloatField(null=True)
    fnmr_low = models.FloatField(null=True)
    fnmr_high = models.FloatField(null=True)
    fmr_ratio_to_best = models.FloatField(null=True)
    ratio_note = models.CharField(max_length=300, blank=True)
    fmr_effective_n = models.FloatField(null=True)
    fnmr_effective_n = models.FloatField(null=True)

    class Meta:
        ordering = ["threshold"]
        constraints = [
            models.UniqueConstraint(fields=["group", "threshold"], name="audit_rate_unique_threshold"),
            models.CheckConstraint(
                condition=Q(fmr__isnull=True) | (Q(fmr_low__lte=F("fmr")) & Q(fmr_high__gte=F("fmr"))),
                name="audit_rate_fmr_in_interval",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group} at {self.threshold}"
