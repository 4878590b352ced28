from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

SLUG_USED = (
    "This slug is already used by another organisation (slugs are the same whatever their case); choose another."
)


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
    target_fmr = models.FloatField(
        "target false match rate",
        default=0.001,
        validators=[MinValueValidator(1e-6), MaxValueValidator(0.5)],
        help_text="The false match rate the worst demographic group should be held to (0.001 = 0.1%).",
    )
    fpir_ceiling = models.FloatField(
        "ceiling on strangers' searches returning a candidate",
        default=0.5,
        validators=[MinValueValidator(0.01), MaxValueValidator(0.99)],
        help_text="The proposed threshold keeps, for every group the audit measures, the top of the 95% interval of "
        "the share of searches for a stranger that return a candidate at or under this (0.5: fewer than half).",
    )
    audit_max_age_days = models.PositiveIntegerField(
        default=180, help_text="An audit older than this no longer counts as valid."
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days after a case is closed before its probe photos, crops and encodings are purged. "
        "Empty keeps them until erased by hand.",
    )
    keep_originals = models.BooleanField(
        default=False, help_text="Keep each upload as received (with its metadata) beside the cleaned copy."
    )
    require_valid_audit = models.BooleanField(
        default=False, help_text="Refuse confirmations while no valid audit exists for the engine in use."
    )
    # Use-case gating: an organisation may search only once a superuser has recorded why and on what
    # legal basis it processes biometric data.
    permitted_purpose = models.TextField(blank=True)
    legal_basis = models.CharField(max_length=300, blank=True)
    use_case_approved_at = models.DateTimeField(null=True, blank=True)
    # Matching waits until an org admin has confirmed the threshold on the page that shows what it means.
    threshold_confirmed_at = models.DateTimeField(null=True, blank=True)
    threshold_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
            # `acme` and `Acme` would be two namespaces for one reader (members are `<slug>.<name>`, compared
            # whatever their case): one organisation's names would collide with, and so reveal, the other's.
            models.UniqueConstraint(
                Lower("slug"), name="organisation_slug_unique_any_case", violation_error_message=SLUG_USED
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    CASEWORKER = "caseworker", "Caseworker"
    REVIEWER = "reviewer", "Reviewer"
    ORG_ADMIN = "org_admin", "Organisation admin"


class Invitation(models.Model):
    """A single-use link that lets someone join an organisation with a role. Only a hash of the token is kept."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=20, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.organisation} as {self.get_role_display()}"

    @property
    def usable(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


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
    """An append-only record of who did what. Written by `portal.audit`, never edited.

    Events are chained per organisation (`chain` is the organisation's id, 0 for events with none): each row
    carries its predecessor's hash, and its own hash is an HMAC under a key kept outside the database
    (`key_id` names it). Views (`seq` empty) are written without the chain's lock, each with the next number of
    its chain's run of views (`view_seq`, signed), and folded into the chain later by a seal event
    (`sealed_by`). `verify_audit_log` checks all of it; see `portal/audit.py`.
    """

    chain = models.PositiveBigIntegerField(default=0, editable=False)
    seq = models.PositiveBigIntegerField(null=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)
    key_id = models.CharField(max_length=16, blank=True, editable=False)
    # Views only: 1, 2, 3... per chain, from AuditViewCounter. Empty on events, and on views written before views
    # were numbered.
    view_seq = models.PositiveBigIntegerField(null=True, editable=False)
    sealed_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="sealed_views", editable=False
    )

    # PROTECT: the hash covers these ids, so deleting a user or an organisation would break the chain.
    # Deactivate users instead.
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=60, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="auditevent_unique_chain_seq"),
            # A partial index rather than a table constraint, on every database: a copy of a view is refused.
            models.UniqueConstraint(
                fields=["chain", "view_seq"],
                condition=models.Q(view_seq__isnull=False),
                name="auditevent_unique_chain_view_seq",
            ),
        ]
        indexes = [
            models.Index(
                fields=["chain"],
                condition=models.Q(seq__isnull=True, sealed_by__isnull=True),
                name="auditevent_unsealed_views",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action}"


class AuditChainHead(models.Model):
    """The last event of one chain, locked by every write to that chain, so that it never forks."""

    chain = models.PositiveBigIntegerField(unique=True, default=0)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"Audit chain {self.chain} at {self.last_seq}"


class AuditViewCounter(models.Model):
    """How many views one chain has had: locked for the moment a view is written, so that views take
    consecutive numbers and commit in their order. A row of its own, not the chain's head, so that views never
    wait behind the chain's writers."""

    chain = models.PositiveBigIntegerField(unique=True, default=0)
    last_view = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"Audit chain {self.chain}: {self.last_view} views"


class TaskOutbox(models.Model):
    """A Celery task to send, written in the same transaction as the rows it is about.

    The task reaches the broker if and only if those rows were committed, and a
    broker outage delays it instead of losing it or failing the request.
    """

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    # A sender holds a row until then, so that two sweepers do not both publish it;
    # a sender that dies mid-publish lets go when this passes.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "outbox task"
        indexes = [
            models.Index(fields=["id"], condition=models.Q(sent_at__isnull=True), name="taskoutbox_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}{tuple(self.args)}"


class WorkerHeartbeat(models.Model):
    """The last sign of life from one Celery worker, written by the worker itself."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname


class ApiKeyKind(models.TextChoices):
    ORGANISATION = "organisation", "Organisation key"
    PERSONAL = "personal", "Personal token"


class ApiKey(models.Model):
    """A secret that authenticates API calls as `user`. Only its SHA-256 is kept; the secret is shown once.

    An organisation key acts through a service user of its own, whose membership carries the key's role,
    so that every access check treats it like a member; revoking the key deactivates that user.
    A personal token acts as the person who created it, with their role.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=12, choices=ApiKeyKind.choices, default=ApiKeyKind.ORGANISATION)
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=20, choices=Role.choices, blank=True)
    # The visible start of the secret: it finds the row, and lets a person tell keys apart.
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind="organisation") | ~models.Q(role=""), name="apikey_organisation_has_role"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
