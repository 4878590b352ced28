"""A demo organisation that can reach a confirmed match in its first hour.

It lives in `reviews`, the app that may import from the other two: the demo needs members (portal), a
reference gallery (matching) and two trained reviewers (reviews).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from matching import services
from matching.models import Gallery, Subject
from portal.management.commands.demo_totp import DEMO_EMAIL_DOMAIN
from portal.models import Membership, Organisation, Role
from reviews.services import review_policy_update, training_record, training_status

DEMO_PASSWORD = "demo-portal-2026"

# Two reviewers: the default policy needs two independent confirmations from two trained reviewers.
DEMO_USERS = [
    ("alice", Role.CASEWORKER, "Alice", "Caseworker"),
    ("bob", Role.REVIEWER, "Bob", "Reviewer"),
    ("rita", Role.REVIEWER, "Rita", "Reviewer"),
    ("dana", Role.ORG_ADMIN, "Dana", "Admin"),
]
DEMO_GALLERY = "Demo reference photos"
# Public test photos from ../shared/faces. The caseworker's probe is another photo of the first subject.
DEMO_SUBJECTS = [
    ("DEMO-001", "Barack Obama", "M", "45-59", "Black", "face_recognition/obama__tests_test_images_obama.jpg"),
    ("DEMO-002", "Joe Biden", "M", "60+", "White", "face_recognition/biden__tests_test_images_biden.jpg"),
]
DEMO_PROBE = "face_recognition/obama__tests_test_images_obama2.jpg"


class Command(BaseCommand):
    help = (
        "Create a demo organisation: a caseworker, two trained reviewers, an org admin, a superuser and a small "
        "reference gallery. Safe to run twice. Refused when DEPLOYMENT=production."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD)

    @transaction.atomic
    def handle(self, *args, password: str, **options) -> None:
        if settings.DEPLOYMENT == "production":
            raise CommandError(
                "seed_demo creates accounts with a published password; it refuses DEPLOYMENT=production."
            )
        User = get_user_model()
        organisation, _ = Organisation.objects.get_or_create(
            slug="demo",
            defaults={
                "name": "Demo organisation",
                "permitted_purpose": "Demonstration with public test photos only",
                "legal_basis": "No personal data of real cases; demonstration",
                "use_case_approved_at": timezone.now(),
            },
        )
        lines = []
        users = {}
        for username, role, first_name, last_name in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@{DEMO_EMAIL_DOMAIN}", "first_name": first_name, "last_name": last_name},
            )
            if created:
                user.set_password(password)
                user.save(update_fields=["password"])
            Membership.objects.get_or_create(user=user, defaults={"organisation": organisation, "role": role})
            users[username] = user
            shown = password if created else "(unchanged)"
            lines.append(f"  {username:6} {Role(role).label:18} {user.email or '(no e-mail)':28} password: {shown}")
        admin, created = User.objects.get_or_create(
            username="root", defaults={"is_superuser": True, "is_staff": True, "email": f"root@{DEMO_EMAIL_DOMAIN}"}
        )
        if created:
            admin.set_password(password)
            admin.save(update_fields=["password"])
        shown = password if created else "(unchanged)"
        lines.append(f"  {'root':6} {'Superuser':18} {admin.email or '(no e-mail)':28} password: {shown}")

        # Training is attested by the org admin, as a real organisation records it: never by the reviewer.
        for username in ("bob", "rita"):
            reviewer = users[username]
            if not training_status(reviewer, organisation).current:
                training_record(
                    organisation=organisation,
                    reviewer=reviewer,
                    trained_on=timezone.localdate() - datetime.timedelta(days=30),
                    course="FISWG facial comparison (demo record)",
                    acting_user=users["dana"],
                )

        # The demo reviews blind to the score, as a new organisation does. It is the policy's default; set here too,
        # so that seeding a demo made before that default turns it on as well (an audited change by dana).
        review_policy_update(organisation=organisation, acting_user=users["dana"], hide_scores_until_compared=True)

        # A real organisation's admin confirms the threshold on /settings/ after reading what it means for this
        # gallery; the demo does it for dana at the library's 0.6, and says so, so that the journey can start.
        if organisation.threshold_confirmed_at is None:
            services.organisation_threshold_confirm(
                organisation=organisation, threshold=organisation.distance_threshold, acting_user=users["dana"]
            )
            threshold_note = (
                f"dana confirmed the demo's threshold, {organisation.distance_threshold}, for you: see what it "
                "means for this gallery at /settings/."
            )
        else:
            threshold_note = f"Threshold {organisation.distance_threshold}, confirmed by an org admin."

        self.stdout.write(f"Demo organisation “{organisation.name}”. Log in at /accounts/login/ as:")
        self.stdout.write("\n".join(lines))
        self.stdout.write("bob and rita have current training records, recorded by dana.")
        self.stdout.write(threshold_note)
        self.stdout.write(self._gallery(organisation, users["dana"]))

    def _gallery(self, organisation: Organisation, dana) -> str:
        root = Path(settings.FACES_DIR)
        missing = [file for *_, file in DEMO_SUBJECTS if not (root / file).is_file()]
        if missing:
            return (
                f"No demo gallery: the public test photos are not at {root} (set FACES_DIR). "
                "Enrol reference photos at /galleries/ as dana."
            )
        gallery = Gallery.objects.filter(organisation=organisation, name=DEMO_GALLERY).first()
        if gallery is None:
            gallery = services.gallery_create(
                organisation=organisation,
                name=DEMO_GALLERY,
                description="Public test photos from the face_recognition project; no real case.",
                acting_user=dana,
            )
        enrolled = 0
        for code, name, sex, age_band, ethnicity, file in DEMO_SUBJECTS:
            if Subject.objects.filter(gallery=gallery, code=code).exists():
                continue
            upload = SimpleUploadedFile(Path(file).name, (root / file).read_bytes(), content_type="image/jpeg")
            services.subject_enrol(
                gallery=gallery,
                code=code,
                display_name=name,
                sex=sex,
                age_band=age_band,
                ethnicity=ethnicity,
                photos=[services.uploaded_image_read(upload)],
                acting_user=dana,
            )
            enrolled += 1
        return (
            f"Gallery “{gallery.name}”: {gallery.subjects.count()} subjects ({enrolled} enrolled now; the worker "
            f"encodes their faces). A probe photo of DEMO-001 to upload as alice: {root / DEMO_PROBE}"
        )
