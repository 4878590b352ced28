from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import PASSWORD, MembershipFactory, OrganisationFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent


# The API fuzzer's seed (tests/matching/test_api_fuzz.py): fixed, so that CI's runs repeat; FUZZ_RANDOM=1 draws
# one for a longer hunt. Either way the header says which, so that FUZZ_SEED=<it> repeats the run.
DEFAULT_FUZZ_SEED = 15


def pytest_configure(config) -> None:
    if os.environ.get("FUZZ_RANDOM") == "1" and not os.environ.get("FUZZ_SEED"):
        os.environ["FUZZ_SEED"] = str(random.SystemRandom().randrange(2**32))


def fuzz_settings_line() -> str:
    return (
        f"API fuzzer: FUZZ_SEED={os.environ.get('FUZZ_SEED') or DEFAULT_FUZZ_SEED} "
        f"FUZZ_EXAMPLES={os.environ.get('FUZZ_EXAMPLES') or 15}"
    )


def pytest_report_header(config) -> str:
    return fuzz_settings_line()


# Skips. A newcomer's `make test` runs on SQLite, where the PostgreSQL-only tests skip, each saying why. Anything
# else that skips (no Redis, no photos, no Chromium) means part of the suite did not run. .ci/run runs the suite
# twice: as a newcomer with ALLOWED_SKIP_MARKERS=postgresql_only, and on PostgreSQL with REQUIRE_ALL_TESTS=1.
# In either mode a skip of a test without an allowed marker fails the run.


def pytest_runtest_setup(item) -> None:
    marker = item.get_closest_marker("postgresql_only")
    if marker is not None:
        from django.db import connection

        if connection.vendor != "postgresql":
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            pytest.skip(f"PostgreSQL only: {reason} Set DATABASE_URL to a PostgreSQL database (CI does).")


def _skip_policy() -> tuple[bool, set[str]]:
    """(whether skips are checked, the markers whose tests may skip)."""
    allowed = {name.strip() for name in os.environ.get("ALLOWED_SKIP_MARKERS", "").split(",") if name.strip()}
    return os.environ.get("REQUIRE_ALL_TESTS") == "1" or bool(allowed), allowed


def _skips(reporter) -> tuple[list, list]:
    """(allowed, forbidden) skip reports under the policy; both empty when skips are not checked."""
    checked, allowed = _skip_policy()
    if not checked or reporter is None:
        return [], []
    reports = reporter.stats.get("skipped", [])
    ok = [r for r in reports if allowed & set(getattr(r, "keywords", {}))]
    return ok, [r for r in reports if r not in ok]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    # Again at the end, where a quiet run (-q, no header) shows it too.
    terminalreporter.write_line(fuzz_settings_line())
    checked, allowed = _skip_policy()
    if not checked:
        return
    ok, forbidden = _skips(terminalreporter)
    if ok:
        terminalreporter.write_line(f"{len(ok)} skipped as allowed here ({', '.join(sorted(allowed))}).")
    if forbidden:
        terminalreporter.write_line(
            f"{len(forbidden)} skipped tests count as failures here (allowed: {', '.join(sorted(allowed)) or 'none'}):",
            red=True,
        )
        for report in forbidden:
            terminalreporter.write_line(f"  {report.nodeid}", red=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    _ok, forbidden = _skips(session.config.pluginmanager.get_plugin("terminalreporter"))
    if forbidden and session.exitstatus == 0:
        session.exitstatus = 1


# Settings


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _test_settings(settings, media_root):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.MEDIA_ROOT = str(media_root)
    # Most tests are about what a signed-in reviewer may do, not about signing in; tests/portal/test_security.py
    # turns the second factor back on.
    settings.REQUIRE_TWO_FACTOR = False
    # Throttle counters stay in this process, whatever REDIS_URL says; tests/faults/test_throttle.py
    # points the cache at a private Redis.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(autouse=True)
def _fresh_gallery_cache():
    from matching.accuracy.gallery_risk import caches_clear
    from matching.search import gallery_cache
    from reviews.selectors import _queue_cases

    gallery_cache.clear()
    caches_clear()
    # Each web process remembers a reviewer's case list for half a minute, keyed by ids a new test reuses.
    _queue_cases.clear()
    yield
    gallery_cache.clear()


# Real faces


@dataclass(frozen=True)
class Faces:
    root: Path
    rows: list[dict[str, str]]

    def path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def upload(self, name: str, content_type: str = "image/jpeg") -> SimpleUploadedFile:
        return SimpleUploadedFile(Path(name).name, self.read(name), content_type=content_type)

    def where(self, **conditions: str) -> list[dict[str, str]]:
        return [row for row in self.rows if all(row.get(k) == v for k, v in conditions.items())]


@pytest.fixture(scope="session")
def faces() -> Faces:
    root = Path(settings.FACES_DIR)
    manifest = root / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"Real face photos not found at {root} (set FACES_DIR to the folder holding manifest.csv).")
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return Faces(root=root, rows=rows)


# Personas: alice (caseworker), bob (reviewer), dana (org admin) of one
# organisation; charlie (caseworker) and erin (org admin) of another.


@pytest.fixture
def org(db):
    return OrganisationFactory(name="Acme Search", slug="acme")


@pytest.fixture
def other_org(db):
    return OrganisationFactory(name="Other Org", slug="other")


def _member(username: str, organisation, role: str):
    return MembershipFactory(user=UserFactory(username=username), organisation=organisation, role=role).user


def _second_admin(organisation):
    """olga, a second org admin, for what dana may not do for herself (attest her own training)."""
    from portal.models import Membership

    existing = Membership.objects.filter(user__username="olga", organisation=organisation).first()
    return existing.user if existing else _member("olga", organisation, "org_admin")


@pytest.fixture
def alice(org):
    return _member("alice", org, "caseworker")


@pytest.fixture
def bob(org):
    return _member("bob", org, "reviewer")


@pytest.fixture
def dana(org):
    return _member("dana", org, "org_admin")


@pytest.fixture
def charlie(other_org):
    return _member("charlie", other_org, "caseworker")


@pytest.fixture
def erin(other_org):
    return _member("erin", other_org, "org_admin")


@pytest.fixture
def password() -> str:
    return PASSWORD


def client_for(client, user):
    client.force_login(user)
    return client


# A real Celery worker on a real Redis broker


def _redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _celery_broker():
    """Point the test process at Redis when it runs, at an in-memory broker when it doesn't."""
    from portal.celery import app

    url = _redis_url()
    app.conf.broker_url = url if redis_reachable(url) else "memory://"
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _redis_url()
    if not redis_reachable(url):
        pytest.skip(f"Redis is not reachable at {url}; start it, or set TEST_REDIS_URL.")
    return url


def _database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path, queues: str | None = None) -> None:
        self.env, self.log, self.queues = env, log, queues
        self.process: subprocess.Popen | None = None

    def mails(self) -> list[str]:
        """Every message the worker has sent so far, as text (the file backend writes one file per connection)."""
        folder = Path(self.env.get("EMAIL_FILE_PATH", ""))
        if not folder.is_dir():
            return []
        return [path.read_text() for path in sorted(folder.iterdir())]

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"test-{os.getpid()}-{id(self)}@%h",
                *(["-Q", self.queues] if self.queues else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, redis_url, media_root, tmp_path_factory):
    """A real `celery worker` process on the test database and the test Redis database."""
    import redis
    from django.db import connection

    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        "CELERY_BROKER_URL": redis_url,
        "MEDIA_ROOT": str(media_root),
        "FACES_DIR": str(settings.FACES_DIR),
        # The worker sends the mail (through the outbox), so tests read what it sent from these files.
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(tmp_path_factory.mktemp("worker-mail")),
    }
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session", autouse=True)
def _other_sessions_ended(django_db_setup, django_db_blocker):
    """Before the test database is dropped, wait until no other session is connected to it.

    PostgreSQL ends a backend a moment after its client (a worker process, a live-server thread) has gone;
    dropping the database in that moment fails with "being accessed by other users". Set up right after the
    database, this is torn down right before it is dropped, after every other session fixture.
    """
    yield
    with django_db_blocker.unblock():
        _other_sessions_wait_out()


def _other_sessions_wait_out(timeout: float = 5.0, *, busy_only: bool = False) -> None:
    """Wait until no other session is connected to the test database, or (`busy_only`) none is inside a statement
    or a transaction: a live-server thread still answering a request the browser made as the test ended holds
    its tables' locks, and flushing the database then can deadlock with it."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    busy = " AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')" if busy_only else ""

    def others() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, application_name, client_port, state, left(query, 80) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()" + busy
            )
            return cursor.fetchall()

    deadline = time.monotonic() + timeout
    while (remaining := others()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if remaining:
        # Not a test failure: the database drop will say so too. Named here, with the local process that holds
        # each one (ss), so that the holder can be found.
        ss = shutil.which("ss")
        owners = (
            subprocess.run([ss, "-tnpH"], capture_output=True, text=True, check=False).stdout.splitlines() if ss else []
        )
        held = [[line for line in owners if f":{port} " in line] for _, _, port, _, _ in remaining]
        warnings.warn(
            f"Sessions still on the test database at teardown: {remaining}; held by {held}; "
            f"this process is {os.getpid()}",
            stacklevel=1,
        )


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:.0f}s waiting for {message}.")


# Enrolment and cases through the real services, processed in this process


@pytest.fixture
def enrol(dana, faces):
    from matching import services
    from matching.models import Gallery

    def _enrol(code: str, *names: str, gallery: Gallery | None = None, **attributes):
        organisation = dana.membership.organisation
        gallery = gallery or Gallery.objects.filter(organisation=organisation).first()
        if gallery is None:
            gallery = services.gallery_create(organisation=organisation, name="Reference", acting_user=dana)
        subject = services.subject_enrol(
            gallery=gallery,
            code=code,
            photos=[services.uploaded_image_read(faces.upload(n)) for n in names],
            acting_user=dana,
            **attributes,
        )
        for photo in subject.photos.all():
            services.photo_process(photo_id=photo.id)
        return subject

    return _enrol


@pytest.fixture
def open_case(alice, faces):
    from matching import services

    def _open_case(*names: str, reference: str = "C-1", process: bool = True, **fields):
        case = services.case_create(
            organisation=alice.membership.organisation,
            acting_user=alice,
            reference=reference,
            title=fields.pop("title", "Missing child"),
            purpose=fields.pop("purpose", "Locate a missing child"),
            photos=[services.uploaded_image_read(faces.upload(n)) for n in names],
            **fields,
        )
        if process:
            for photo in case.photos.all():
                services.photo_process(photo_id=photo.id)
        return case

    return _open_case


OBAMA = "face_recognition/obama__tests_test_images_obama.jpg"
OBAMA_2 = "face_recognition/obama__tests_test_images_obama2.jpg"
BIDEN = "face_recognition/biden__tests_test_images_biden.jpg"


@pytest.fixture
def eager_tasks():
    """Run queued tasks inline, in this process, for tests about what a task does rather than how it travels."""
    from portal.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False


# A bias audit of the real photos, imported once with the management command


@dataclass(frozen=True)
class ImportedAudit:
    dataset_id: int
    output: str
    attributes: list[str]
    samples: list[tuple[int, str, str, dict, bytes]]
    report: list[dict]
    engine_version: str


@pytest.fixture(scope="session")
def imported_audit(django_db_setup, django_db_blocker, faces, tmp_path_factory) -> ImportedAudit:
    """`audit_import` over ../shared/faces/manifest.csv, committed once for the session."""
    import io

    from django.core.management import call_command
    from django.test import override_settings

    from matching.models import AuditDataset

    out = io.StringIO()
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("audit-media"))):
        call_command(
            "audit_import",
            "--name=Shared faces",
            f"--manifest={faces.root / 'manifest.csv'}",
            f"--images={faces.root}",
            stdout=out,
        )
        dataset = AuditDataset.objects.latest("id")
        samples = [
            (s.line, s.file, s.identity, s.attributes, bytes(s.encoding)) for s in dataset.samples.order_by("line")
        ]
        return ImportedAudit(
            dataset.pk, out.getvalue(), dataset.attributes, samples, dataset.report, dataset.engine_version
        )


@pytest.fixture
def audit_dataset(db, imported_audit):
    """The imported set, restored from memory when a transactional test has flushed the database."""
    from matching.models import AuditDataset, AuditSample

    dataset = AuditDataset.objects.filter(pk=imported_audit.dataset_id).first()
    if dataset is not None:
        return dataset
    dataset = AuditDataset.objects.create(
        name="Shared faces",
        attributes=imported_audit.attributes,
        engine_version=imported_audit.engine_version,
        status="done",
        rows_total=len(imported_audit.report),
        rows_done=len(imported_audit.report),
        report=imported_audit.report,
    )
    AuditSample.objects.bulk_create(
        AuditSample(dataset=dataset, line=line, file=file, identity=identity, attributes=attributes, encoding=encoding)
        for line, file, identity, attributes, encoding in imported_audit.samples
    )
    return dataset


@pytest.fixture
def audit_run(audit_dataset, org):
    from matching.accuracy.evaluation import audit_run_create

    return audit_run_create(dataset=audit_dataset, organisation=org, acting_user=None)


# Reviewing under the organisation's policy: two trained reviewers, bob and rita


ALL_SIMILAR = {
    "face_shape": "similar",
    "hairline": "similar",
    "forehead": "similar",
    "eyebrows": "similar",
    "eyes": "similar",
    "nose": "similar",
    "ears": "similar",
    "mouth": "similar",
    "chin_jaw": "similar",
    "marks_scars": "not_visible",
}


def analyse(candidate, reviewer, value: str = "value", limits=(), note: str = ""):
    """The reviewer's analysis of the candidate's probe face (ACE-V), as the analysis step records it."""
    from reviews.services import probe_analyse

    return probe_analyse(candidate_id=candidate.pk, value=value, limits=list(limits), note=note, acting_user=reviewer)


def analysed(candidate, reviewer) -> None:
    """Record an "of value" analysis for the reviewer unless one already holds for them."""
    from reviews.selectors import analysis_needed, decision_blockers

    candidate.refresh_from_db()
    if not decision_blockers(reviewer, candidate) and analysis_needed(reviewer, candidate):
        analyse(candidate, reviewer)


def decide(candidate, reviewer, conclusion: str = "identification", reason: str = "Ears, nose and jaw agree.", **kw):
    from reviews.services import review_decide

    # Most tests are about the decision: the analysis that must come before it is taken as "of value".
    if kw.pop("analyse", True):
        analysed(candidate, reviewer)
    return review_decide(
        candidate_id=candidate.pk,
        acting_user=reviewer,
        conclusion=conclusion,
        reason=reason,
        features=kw.pop("features", ALL_SIMILAR),
        bias_acknowledged=kw.pop("bias_acknowledged", True),
        **kw,
    )


def admin_review(client, candidate, data: dict, **kwargs):
    """Post a decision through the candidate's admin page, taking the page's earlier steps first as a reviewer
    does: the probe's analysis (of value) when it asks for one, and the feature comparison while the policy hides
    the scores. Returns the decision's response."""
    from django.urls import reverse

    url = reverse("admin:reviews_reviewitem_change", args=[candidate.pk])
    page = client.get(url).content.decode()
    if 'name="analysis_value"' in page:
        client.post(url, {"analysis_value": "value", "_save": "Save"})
        page = client.get(url).content.decode()
    if 'name="conclusion"' not in page and 'name="feature_face_shape"' in page:
        client.post(url, {**{k: v for k, v in data.items() if k.startswith("feature_")}, "_save": "Save"})
    return client.post(url, data, **kwargs)


def review_post(conclusion: str = "identification", reason: str = "Ears, nose and jaw agree.", **extra) -> dict:
    data = {f"feature_{name}": mark for name, mark in ALL_SIMILAR.items()}
    data.update({"conclusion": conclusion, "reason": reason, "bias_acknowledged": "on", "_save": "Save"})
    data.update(extra)
    return data


@pytest.fixture
def rita(org):
    return _member("rita", org, "reviewer")


@pytest.fixture
def trained(dana):
    """Record current training for the given reviewers, as their org admin would."""
    import datetime

    from django.utils import timezone

    from reviews.services import training_record

    def _trained(*users, days_ago: int = 30):
        for user in users:
            # Nobody attests their own training: dana's is attested by a second org admin.
            attester = dana if user != dana else _second_admin(dana.membership.organisation)
            training_record(
                organisation=user.membership.organisation,
                reviewer=user,
                trained_on=timezone.localdate() - datetime.timedelta(days=days_ago),
                course="FISWG facial comparison",
                acting_user=attester,
            )

    return _trained


@pytest.fixture
def reviewers(bob, rita, trained):
    trained(bob, rita)
    return bob, rita
