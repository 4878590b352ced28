from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Organisation(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    distance_threshold = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.05), MaxValueValidator(1.5)],
        help_text="A gallery face counts as a candidate only when its distance to the probe is at most this.",
    )
    max_candidates = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="At most this many subjects are listed for each probe face.",
    )
    # Bumped whenever a gallery face is added or removed, so that a worker's
    # cached gallery matrix is rebuilt.
    gallery_version = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(distance_threshold__gt=0) & models.Q(distance_threshold__lte=1.5),
                name="organisation_threshold_range",
            ),
            models.CheckConstraint(condition=models.Q(max_candidates__gte=1), name="organisation_max_candidates_min"),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    CASEWORKER = "caseworker", "Caseworker"
    REVIEWER = "reviewer", "Reviewer"
    ORG_ADMIN = "org_admin", "Organisation admin"


class Membership(models.Model):
    """A user's place in one organisation. A user belongs to at most one."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.CASEWORKER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organisation", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}, {self.organisation})"


class AuditEvent(models.Model):
    """An append-only record of who did what. Written by services, never edited."""

    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=60, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action}"
