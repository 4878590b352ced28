"""A demo organisation that can reach a confirmed match in its first hour.

It lives in `reviews`, the app that may import from the other two: the demo needs members (portal), a
reference gallery (matching) and two trained reviewers (reviews).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from matching import services
from matching.accuracy import evaluation, gallery_risk
from matching.models import AuditDataset, Gallery, Subject
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
# The rest of the public photos are cut in two by a hash of each person's label: one half fills the demo gallery
# (one photo each, with the sex, age band and race the manifest records), the other half is the evaluation set
# whose audit says what a search of that gallery means. Nobody is in both.
DEMO_EVALUATION_SET = "Demo evaluation set (public test photos)"
MANIFEST_FOLDERS = ("face_recognition/", "lfw/", "utkface/", "compreface/", "facenet_pytorch/", "mtcnn/", "dlib/")


def _demo_half(identity: str) -> int:
    return int(hashlib.sha256(f"demo-gallery:{identity}".encode()).hexdigest(), 16) % 2


def _display_name(identity: str) -> str:
    """LFW's people are public figures named in their label; UTKFace's are anonymous and stay so."""
    return identity.removeprefix("lfw_").replace("_", " ") if identity.startswith("lfw_") else ""


# Closing a demo case then says when its biometrics go; an org admin changes it on the organisation's admin page.
DEMO_RETENTION_DAYS = 30


class Command(BaseCommand):
    help = (
        "Create a demo organisation: a caseworker, two trained reviewers, an org admin, a superuser, a demo-sized "
        "reference gallery, an evaluation set of other people audited for it, and the threshold the settings page "
        "proposes. Safe to run twice. Refused when DEPLOYMENT=production."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD)
        parser.add_argument(
            "--no-evaluation-set",
            dest="evaluation_set",
            action="store_false",
            help="Skip the evaluation set (a minute of face encoding): the threshold then waits for an org admin.",
        )

    @transaction.atomic
    def handle(self, *args, password: str, evaluation_set: bool = True, **options) -> None:
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
                "retention_days": DEMO_RETENTION_DAYS,
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

        self.stdout.write(f"Demo organisation “{organisation.name}”. Log in at /accounts/login/ as:")
        self.stdout.write("\n".join(lines))
        self.stdout.write("bob and rita have current training records, recorded by dana.")
        self.stdout.write(self._gallery(organisation, users["dana"]))
        if not evaluation_set:
            self.stdout.write("No evaluation set (--no-evaluation-set): confirm a threshold at /settings/ as dana.")
            return
        self.stdout.write(self._audit(organisation, users["dana"]))
        self.stdout.write(self._threshold(organisation, users["dana"]))

    def _threshold(self, organisation: Organisation, dana) -> str:
        """A real org admin confirms the threshold on /settings/ after reading what it means for the gallery; the
        demo confirms what that page proposes, for dana, and says what it costs."""
        if organisation.threshold_confirmed_at is not None:
            return f"Threshold {organisation.distance_threshold}, confirmed by an org admin."
        consequences = gallery_risk.threshold_consequences(organisation)
        point = gallery_risk.operating_point_for(consequences)
        threshold = point.proposed if point.proposed is not None else organisation.distance_threshold
        services.organisation_threshold_confirm(organisation=organisation, threshold=threshold, acting_user=dana)
        if point.proposed is None:
            return (
                f"dana confirmed the library's {threshold} for you: no audit could propose a threshold "
                f"({consequences.unavailable or 'no threshold keeps every group under the ceiling'})."
            )
        everyone = point.everyone
        lines = [
            f"dana confirmed the threshold the settings page proposes, {threshold}: in this gallery, about "
            f"{gallery_risk.in_100(everyone.fpir)} in 100 searches for a stranger return someone, and about "
            f"{gallery_risk.in_100(everyone.fnir)} in 100 searches for someone enrolled miss them. See /settings/."
        ]
        lines += [f"Weak evidence: {weak.sentence}" for weak in point.weak]
        return "\n".join(lines)

    def _audit(self, organisation: Organisation, dana) -> str:
        """The demo's evaluation set: the public photos of the people not in its gallery, audited for the demo."""
        root = Path(settings.FACES_DIR)
        if not (root / "manifest.csv").is_file():
            return f"No demo evaluation set: the public test photos are not at {root} (set FACES_DIR)."
        dataset = AuditDataset.objects.filter(name=DEMO_EVALUATION_SET, organisation__isnull=True).first()
        if dataset is None:
            text = (root / "manifest.csv").read_text(encoding="utf-8")
            reader = csv.DictReader(io.StringIO(text))
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
            writer.writeheader()
            demo = {identity for identity, *_ in self._gallery_people(root)}
            for row in reader:
                if row["purpose"] == "identity" and row["identity"] and row["identity"] not in demo:
                    writer.writerow(row)
            self.stdout.write("Importing the demo's evaluation set (public test photos; about a minute)…")
            dataset = evaluation.audit_dataset_create(
                name=DEMO_EVALUATION_SET, organisation=None, manifest=out.getvalue().encode(), acting_user=None
            )
            dataset = evaluation.audit_dataset_import(dataset_id=dataset.pk, images_dir=root)
        if not dataset.runs.filter(organisation=organisation).exists():
            evaluation.audit_run_create(dataset=dataset, organisation=organisation, acting_user=dana)
        return (
            f"Evaluation set “{dataset.name}”: {dataset.accepted_count} photos of people not in the gallery, "
            "audited for the demo (see /audits/)."
        )

    def _gallery_people(self, root: Path) -> list[tuple[str, str, str, str, str, str]]:
        """(identity, display name, sex, age band, race, file) for each person of the demo gallery, in a fixed order."""
        people: dict[str, tuple[str, str, str, str, str, str]] = {}
        with (root / "manifest.csv").open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                identity = row["identity"]
                if row["purpose"] != "identity" or not identity or row.get("faces_found_hog") != "1":
                    continue
                if not row["file"].startswith(MANIFEST_FOLDERS) or identity in people:
                    continue
                if _demo_half(identity) == 0 or identity in ("fr_obama", "fr_biden"):
                    people[identity] = (
                        identity,
                        _display_name(identity),
                        row["sex"],
                        row["age_band"],
                        row["race"],
                        row["file"],
                    )
        return sorted(people.values())

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
                description="Public test photos (face_recognition, LFW, UTKFace and others); no real case.",
                acting_user=dana,
            )
        named = {"fr_obama", "fr_biden"}
        others = [person for person in self._gallery_people(root) if person[0] not in named]
        subjects = list(DEMO_SUBJECTS) + [
            (f"DEMO-{number:03d}", name, sex, age_band, race, file)
            for number, (_, name, sex, age_band, race, file) in enumerate(others, start=len(DEMO_SUBJECTS) + 1)
        ]
        existing = set(Subject.objects.filter(gallery=gallery).values_list("code", flat=True))
        enrolled = 0
        for code, name, sex, age_band, ethnicity, file in subjects:
            if code in existing:
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
