from __future__ import annotations

from django.conf import settings
from django.db import models

from matching.models import Candidate


class Decision(models.TextChoices):
    CONFIRM = "confirm", "Confirm: the same person"
    REJECT = "reject", "Reject: not the same person"


class ReviewItem(Candidate):
    """A candidate as the reviewer's workbench sees it."""

    class Meta:
        proxy = True
        verbose_name = "review item"


class ReviewDecision(models.Model):
    """A reviewer's decision on a candidate. Rows are only ever added."""

    candidate = models.ForeignKey("matching.Candidate", on_delete=models.PROTECT, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=~models.Q(reason=""), name="decision_has_reason")]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} by {self.reviewer} on candidate {self.candidate_id}"
