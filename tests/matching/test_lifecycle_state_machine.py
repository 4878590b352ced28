"""The biometric lifecycle's promises, held while photos are in flight and the beat sweeps run.

A Hypothesis state machine plays, in random order, what happens to one organisation's photos:

- workers, each step split where the real code holds no lock: claim and detect (`photo_process_detect`), store
  (`photo_process_store`), search, store the search's results; a worker may be lost mid-way and come back late;
- people: the org admin erases subjects, enrols more photos and reopens cases, the caseworker closes cases and
  adds photos;
- the beat: the purge sweep, split into its listing and its purging, and the stale-photo sweep.

Erasure, closing, reopening and the sweeps land between any two of a worker's steps, and between the sweep's
listing and its purge. On PostgreSQL one more rule runs a worker's storing transaction in a thread, paused with
its locks taken, while an erasure, a purge, a close, a reopen or an upload runs in another thread: the real row
locks must order the two without a deadlock and without breaking a promise.

After every step:
- no live face, encoding or file belongs to an erased subject or to a purged case or photo, and no file is left
  on disk that no live row names;
- an open case (a reopened one too) has none of its photos purged, and a purged case was closed for its whole
  retention when it was purged;
- no candidate names an erased subject unless it was made before the erasure (and then it is closed), and the
  gallery index a search would use holds exactly the searchable faces.

Detection is synthetic (a fixed vector per photo, tiny JPEGs for the crop and review images), so that a step
costs milliseconds: 200 examples of up to 50 steps take about four minutes on PostgreSQL. The test prints how
many examples ran and what happened in them (how often a worker found its photo gone, a sweep kept a case
reopened after its listing, a writer waited for a storing worker's locks).

To add rules (invitations, threshold changes, the activity log): give them a section of their own below,
keep the people in `self.users`, and add their promises as a `_check_*` method listed in `CHECKS`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from matching import services
from matching.engine import DetectedFace, engine_version
from matching.models import Candidate, Case, Face, Photo, PhotoStatus, Subject
from matching.services import processing, searching
from portal.models import AuditEvent, Organisation
from tests.conftest import wait_for
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

# CI runs 200 examples of up to 50 steps; LIFECYCLE_EXAMPLES=2000 (and LIFECYCLE_STEPS) for a longer hunt. Fewer
# steps miss the longer interleavings (an erasure between a probe's search and the storing of its results).
EXAMPLES = int(os.environ.get("LIFECYCLE_EXAMPLES", "200"))
STEPS = int(os.environ.get("LIFECYCLE_STEPS", "50"))
SUBJECTS = 3
CASES = 2
RETENTION_DAYS = 7
_example = itertools.count()
# What the examples did, printed at the end: proof that the interleavings that matter were played.
EVENTS: Counter[str] = Counter()


def _jpeg(side: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (150, 110, 90)).save(out, "JPEG")
    return out.getvalue()


TINY_JPEG = _jpeg()
PHOTO_JPEG = _jpeg(64)


def _upload():
    return services.uploaded_image_read(SimpleUploadedFile("photo.jpg", PHOTO_JPEG, content_type="image/jpeg"))


class BiometricLifecycle(RuleBasedStateMachine):
    media_base: Path  # set by the test: a folder for each example's MEDIA_ROOT

    def __init__(self) -> None:
        super().__init__()
        self.number = next(_example)
        self.media = self.media_base / f"example-{self.number}"
        self.media.mkdir(parents=True)
        self._patches = contextlib.ExitStack()
        for patch in (
            override_settings(MEDIA_ROOT=str(self.media)),
            # The machine plays the workers itself: nothing is sent to a broker.
            mock.patch("portal.outbox._publish_after_commit", lambda row_id: None),
            mock.patch.object(processing, "photo_detect", self._detect),
            # A worker's search, and the storing of its results, are steps of their own.
            mock.patch.object(processing, "probe_photo_search", self._search_later),
            mock.patch.object(searching, "search_results_store", self._results_later),
            mock.patch.object(processing, "_photo_lock", self._photo_lock),
        ):
            self._patches.enter_context(patch)
        self.in_flight: list[tuple[int, list[DetectedFace]]] = []  # detected, not stored
        self.searches: list[int] = []  # faces stored, search not run
        self.results: list[dict] = []  # search run, results not stored
        self.listings: list[tuple[list[int], object]] = []  # the purge sweep's listings, not purged yet
        self.vectors: dict[int, np.ndarray] = {}  # photo id -> the face the synthetic detector finds in it

    def teardown(self) -> None:
        self._patches.close()

    # Setup: an organisation, its people, subjects each with a reference photo, cases each with a probe photo

    @initialize(seed=st.integers(0, 2**16))
    def setup(self, seed: int) -> None:
        n = self.number
        self.org = OrganisationFactory(slug=f"lc-{n}", retention_days=RETENTION_DAYS)
        self.users = {
            name: MembershipFactory(user=UserFactory(username=f"lc{n}-{name}"), organisation=self.org, role=role).user
            for name, role in (("admin", "org_admin"), ("caseworker", "caseworker"))
        }
        rng = np.random.default_rng(seed)
        # Far apart (about 1.4), so that a probe finds the subject it shows (0.1 away) and nobody else.
        self.centres = rng.normal(0.0, 0.09, size=(SUBJECTS, 128))
        gallery = services.gallery_create(organisation=self.org, name="Reference", acting_user=self.users["admin"])
        self.subjects = [
            services.subject_enrol(gallery=gallery, code=f"S{i}", photos=[_upload()], acting_user=self.users["admin"])
            for i in range(SUBJECTS)
        ]
        self.cases = [
            services.case_create(
                organisation=self.org,
                acting_user=self.users["caseworker"],
                reference=f"C{j}",
                title="Missing child",
                purpose="Locate a missing child",
                photos=[_upload()],
            )
            for j in range(CASES)
        ]
        for i, subject in enumerate(self.subjects):
            self._shows(subject.photos.all(), i)
        for j, case in enumerate(self.cases):
            self._shows(case.photos.all(), j % SUBJECTS)
        # A gallery to search: every subject's photo but the last is processed already; the rest waits for a worker.
        for subject in self.subjects[:-1]:
            services.photo_process(photo_id=subject.photos.get().pk)

    def _shows(self, photos, subject_index: int) -> None:
        rng = np.random.default_rng(len(self.vectors))
        for photo in photos:
            self.vectors[photo.pk] = self.centres[subject_index] + rng.normal(0.0, 0.005, 128)

    # The worker's steps, patched in where the real worker would go on at once

    def _detect(self, photo: Photo) -> list[DetectedFace]:
        return [
            DetectedFace(
                top=0,
                right=10,
                bottom=10,
                left=0,
                encoding=self.vectors[photo.pk],
                crop_jpeg=TINY_JPEG,
                blur=1.0,
                aligned_jpeg=TINY_JPEG,
                thumbnail_jpeg=TINY_JPEG,
            )
        ]

    def _search_later(self, *, photo_id: int) -> None:
        self.searches.append(photo_id)

    def _results_later(self, **results) -> None:
        self.results.append(results)

    _real_photo_lock = staticmethod(processing._photo_lock)
    _real_search = staticmethod(searching.probe_photo_search)
    _real_results_store = staticmethod(searching.search_results_store)

    def _photo_lock(self, photo_id: int) -> Photo:
        """The real locks; in a worker thread told to pause (see `_Thread`), it then waits with them held."""
        locked = self._real_photo_lock(photo_id)
        events = getattr(_pause, "events", None)
        if events is not None:
            paused, release = events
            paused.set()
            assert release.wait(60), "the paused worker was never released"
        return locked

    # A worker's steps. Each rule is one step of one worker; between two of them anything else may happen.

    @rule(pick=st.integers(0, 63))
    def worker_claims_and_detects(self, pick: int) -> None:
        """A worker takes a photo that waits for one (or, if none does, any photo, and is mostly refused)."""
        photos = Photo.objects.filter(organisation=self.org).order_by("pk")
        waiting = photos.filter(status__in=[PhotoStatus.QUEUED, *processing.WORKING])
        photo_ids = list(waiting.values_list("pk", flat=True)) or list(photos.values_list("pk", flat=True))
        photo_id = photo_ids[pick % len(photo_ids)]
        detected = services.photo_process_detect(photo_id=photo_id)
        if detected is not None:
            self.in_flight.append((photo_id, detected))

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 63))
    def worker_stores_faces(self, pick: int) -> None:
        photo_id, detected = self.in_flight.pop(pick % len(self.in_flight))
        services.photo_process_store(photo_id=photo_id, detected=detected)
        self._count_store(photo_id)

    @precondition(lambda self: self.searches)
    @rule(pick=st.integers(0, 63))
    def worker_searches(self, pick: int) -> None:
        self._real_search(photo_id=self.searches.pop(pick % len(self.searches)))

    @precondition(lambda self: self.results)
    @rule(pick=st.integers(0, 63))
    def worker_stores_search_results(self, pick: int) -> None:
        self._real_results_store(**self.results.pop(pick % len(self.results)))

    def _count_store(self, photo_id: int) -> None:
        reason = Photo.objects.values_list("failure_reason", flat=True).get(pk=photo_id)
        gone = reason in (processing.ERASED_IN_FLIGHT, processing.PURGED_IN_FLIGHT)
        EVENTS["worker stored nothing: gone in flight" if gone else "worker stored, or found the work done"] += 1

    # People: the org admin and the caseworker

    @rule(index=st.integers(0, 5))
    def admin_erases_subject(self, index: int) -> None:
        self._person(
            "erase subject",
            lambda subject, case: services.subject_erase(subject=subject, acting_user=self.users["admin"]),
            index,
        )

    @rule(index=st.integers(0, 5))
    def admin_enrols_another_photo(self, index: int) -> None:
        self._person(
            "enrol another photo",
            lambda subject, case: services.subject_enrol(
                gallery=subject.gallery, code=subject.code, photos=[_upload()], acting_user=self.users["admin"]
            ),
            index,
        )

    @rule(index=st.integers(0, 5))
    def caseworker_closes_case(self, index: int) -> None:
        self._person(
            "close case",
            lambda subject, case: services.case_close(case=case, acting_user=self.users["caseworker"], reason="Found."),
            index,
        )

    @rule(index=st.integers(0, 5))
    def admin_reopens_case(self, index: int) -> None:
        self._person(
            "reopen case",
            lambda subject, case: services.case_reopen(case=case, acting_user=self.users["admin"], reason="Seen."),
            index,
        )

    @rule(index=st.integers(0, 5))
    def caseworker_adds_photo(self, index: int) -> None:
        self._person(
            "add photo",
            lambda subject, case: services.case_add_photos(
                case=case, photos=[_upload()], acting_user=self.users["caseworker"]
            ),
            index,
        )

    def _person(self, action: str, act, index: int) -> None:
        subject, case = self.subjects[index % SUBJECTS], self.cases[index % CASES]
        try:
            act(subject, case)
        except services.ServiceError:
            EVENTS[f"{action}: refused"] += 1
        else:
            EVENTS[f"{action}: done"] += 1
        self._new_photos_show(subject, case)

    def _new_photos_show(self, subject: Subject, case: Case) -> None:
        """What the synthetic detector finds in photos just enrolled or added: their subject's face."""
        subject_index, case_index = self.subjects.index(subject), self.cases.index(case)
        self._shows(Photo.objects.filter(subject=subject).exclude(pk__in=list(self.vectors)), subject_index)
        self._shows(Photo.objects.filter(case=case).exclude(pk__in=list(self.vectors)), case_index % SUBJECTS)

    # The beat: the purge sweep as two steps (its listing, then its purging), and the stale-photo sweep

    @rule(before_retention_ends=st.booleans())
    def purge_sweep_lists(self, before_retention_ends: bool) -> None:
        """The sweep lists the cases due now, or (mostly) as if every closed case's retention had ended."""
        later = timedelta(0) if before_retention_ends else timedelta(days=RETENTION_DAYS, minutes=1)
        now = timezone.now() + later
        ours = {case.pk for case in self.cases}
        listed = [pk for pk in services.cases_due_for_purge(now=now) if pk in ours]
        if listed:
            self.listings.append((listed, now))
        EVENTS["purge sweep listed a case" if listed else "purge sweep listed none"] += 1

    @precondition(lambda self: self.listings)
    @rule(pick=st.integers(0, 63))
    def purge_sweep_purges(self, pick: int) -> None:
        case_ids, now = self.listings.pop(pick % len(self.listings))
        for case_id in case_ids:
            purged = services.case_purge_if_due(case_id=case_id, now=now)
            EVENTS["sweep purged a listed case" if purged else "sweep kept a listed case (reopened or purged)"] += 1

    @rule(workers_alive=st.booleans())
    def stale_photo_sweep(self, workers_alive: bool) -> None:
        """The sweep, (mostly) once every photo being worked on belongs to a lost worker, whose steps in flight
        may still land later."""
        if not workers_alive:
            stale = timezone.now() - timedelta(seconds=django_settings.PHOTO_STALE_AFTER_SECONDS + 1)
            Photo.objects.filter(organisation=self.org, status__in=processing.WORKING).update(status_changed_at=stale)
        requeued = services.photos_requeue_stale().requeued
        EVENTS["stale-photo sweep requeued a lost worker's photo" if requeued else "stale-photo sweep: none"] += 1

    # Real locks (PostgreSQL): a worker's storing transaction, paused with its locks held, against another writer

    @precondition(lambda self: self.in_flight and connection.vendor == "postgresql")
    @rule(
        pick=st.integers(0, 63),
        other=st.sampled_from(["erase subject", "purge case", "close case", "reopen case", "add photo", "enrol photo"]),
        elsewhere=st.booleans(),
        index=st.integers(0, 5),
    )
    def worker_stores_while_another_writes(self, pick: int, other: str, elsewhere: bool, index: int) -> None:
        """The other writer works on the photo's own subject or case, which the worker has locked, unless
        `elsewhere`."""
        photo_id, detected = self.in_flight.pop(pick % len(self.in_flight))
        photo = Photo.objects.get(pk=photo_id)
        subject, case = self.subjects[index % SUBJECTS], self.cases[index % CASES]
        if not elsewhere and photo.subject_id:
            subject = next(s for s in self.subjects if s.pk == photo.subject_id)
        if not elsewhere and photo.case_id:
            case = next(c for c in self.cases if c.pk == photo.case_id)
        admin, caseworker = self.users["admin"], self.users["caseworker"]
        writes = {
            "erase subject": lambda: services.subject_erase(subject=subject, acting_user=admin),
            "purge case": lambda: services.case_purge_if_due(
                case_id=case.pk, now=timezone.now() + timedelta(days=RETENTION_DAYS, minutes=1)
            ),
            "close case": lambda: services.case_close(case=case, acting_user=caseworker, reason="Found safe."),
            "reopen case": lambda: services.case_reopen(case=case, acting_user=admin, reason="New sighting."),
            "add photo": lambda: services.case_add_photos(case=case, photos=[_upload()], acting_user=caseworker),
            "enrol photo": lambda: services.subject_enrol(
                gallery=subject.gallery, code=subject.code, photos=[_upload()], acting_user=admin
            ),
        }
        paused, release = threading.Event(), threading.Event()
        worker = _Thread(
            lambda: services.photo_process_store(photo_id=photo_id, detected=detected), pause=(paused, release)
        )
        writer = _Thread(writes[other])
        try:
            worker.start()
            assert paused.wait(60), "the worker never took its locks"
            writer.start()
            wait_for(
                lambda: not writer.is_alive() or writer.waits_for_a_lock(),
                timeout=30,
                interval=0.005,
                message="the writer to finish or to wait for a lock",
            )
            EVENTS[f"{other} beside a storing worker: {'waited' if writer.is_alive() else 'went ahead'}"] += 1
        finally:
            release.set()
            worker.join(60)
            if writer.ident:
                writer.join(60)
        assert not worker.errors, worker.errors
        assert all(isinstance(error, services.ServiceError) for error in writer.errors), writer.errors
        self._count_store(photo_id)
        self._new_photos_show(subject, case)

    # To come, each in a section like those above: invitations and role changes (an org admin demoted while an
    # invitation is pending), threshold and retention changes through the page, the API and the admin, and the
    # activity log with its unsealed views; their promises go in CHECKS below.

    # What must hold after every step

    CHECKS = ("_check_nothing_gone_is_kept", "_check_open_cases_keep_their_photos", "_check_search_finds_no_one_gone")

    @invariant()
    def promises_hold(self) -> None:
        if not hasattr(self, "org"):
            return
        for check in self.CHECKS:
            getattr(self, check)()

    def _check_nothing_gone_is_kept(self) -> None:
        """No live face, encoding or file of an erased subject or a purged case or photo; no file no row names."""
        named: set[str] = set()
        for photo in Photo.objects.filter(organisation=self.org).select_related("subject", "case"):
            owner_gone = (photo.subject_id and photo.subject.erased_at) or (photo.case_id and photo.case.purged_at)
            if owner_gone:
                assert photo.purged_at is not None, f"{photo} of an erased subject or purged case is not purged"
            if photo.purged_at is not None:
                assert not photo.image and not photo.original, f"{photo} is purged but keeps its files"
            named |= {f.name for f in (photo.image, photo.original) if f}
        faces = Face.objects.filter(organisation=self.org).select_related("photo__subject", "photo__case")
        for face in faces:
            photo = face.photo
            gone = (
                photo.purged_at
                or (photo.subject_id and photo.subject.erased_at)
                or (photo.case_id and photo.case.purged_at)
            )
            if gone:
                assert face.purged_at is not None, f"{face} of a gone photo, subject or case is live"
            if face.purged_at is not None:
                assert bytes(face.encoding) == b"", f"{face} is purged but keeps its encoding"
                assert not (face.crop or face.aligned or face.thumbnail), f"{face} is purged but keeps its files"
            named |= {f.name for f in (face.crop, face.aligned, face.thumbnail) if f}
        on_disk = {str(path.relative_to(self.media)) for path in self.media.rglob("*") if path.is_file()}
        assert on_disk == named, (
            f"files no live row names: {on_disk - named}; rows whose file is gone: {named - on_disk}"
        )

    def _check_open_cases_keep_their_photos(self) -> None:
        """A case open now (reopened or never closed) is not purged and has every photo; a purged one was closed,
        and purged only once its retention had ended."""
        for case in Case.objects.filter(organisation=self.org):
            if case.closed_at is None:
                assert case.purged_at is None, f"{case} is open but purged"
                assert not case.photos.filter(purged_at__isnull=False).exists(), f"open {case} lost photos"
            if case.purged_at is not None:
                # The retention the purge went by, as its log row records it (a later change may not apply).
                purge = AuditEvent.objects.get(organisation=self.org, action="case.purge", target_id=str(case.pk))
                assert case.closed_at is not None, f"{case} was purged while open"
                assert case.closed_at + timedelta(days=purge.detail["retention_days"]) <= case.purged_at

    def _check_search_finds_no_one_gone(self) -> None:
        """No candidate of an erased subject made after its erasure, none of them open, and a search's gallery
        index holds exactly the searchable faces."""
        for subject in Subject.objects.filter(gallery__organisation=self.org, erased_at__isnull=False):
            candidates = Candidate.objects.filter(subject=subject)
            assert not candidates.filter(created_at__gt=subject.erased_at).exists(), f"{subject} found after erasure"
            assert not candidates.open().exists(), f"an open candidate of erased {subject}"
        organisation = Organisation.objects.get(pk=self.org.pk)
        index = searching.organisation_gallery(organisation)
        searchable = set(searching.searchable_faces(organisation.pk, engine_version()).values_list("id", flat=True))
        assert set(index.face_ids().tolist()) == searchable
        assert not Face.objects.filter(pk__in=searchable).exclude(pk__in=Face.objects.live()).exists()


class _Thread(threading.Thread):
    """A step in its own thread and database connection, with its errors kept and its backend's pid known.

    With `pause` (two events), the step stops once the worker holds its locks (`BiometricLifecycle._photo_lock`
    sets the first event) until the second is set."""

    def __init__(self, step, pause: tuple[threading.Event, threading.Event] | None = None) -> None:
        super().__init__()
        self.step, self.pause, self.errors, self.pid = step, pause, [], None

    def run(self) -> None:
        _pause.events = self.pause
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.step()
        except BaseException as error:  # reported by the main thread
            self.errors.append(error)
        finally:
            if self.pause is not None:
                self.pause[0].set()  # so that the main thread never waits for a pause that will not come
            connections.close_all()

    def waits_for_a_lock(self) -> bool:
        if self.pid is None:
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [self.pid])
            return cursor.fetchone() is not None


# The pause of the worker thread that runs a storing step beside another writer; unset in every other thread.
_pause = threading.local()


@pytest.mark.django_db(transaction=True)
def test_the_biometric_lifecycle_keeps_its_promises_with_work_in_flight(tmp_path, capsys):
    BiometricLifecycle.media_base = tmp_path
    EVENTS.clear()
    first = next(_example)
    run_state_machine_as_test(
        BiometricLifecycle,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        ),
    )
    examples = next(_example) - first - 1
    with capsys.disabled():
        print(f"\nbiometric lifecycle state machine: {examples} examples run on {connection.vendor}")
        for event, count in sorted(EVENTS.items()):
            print(f"  {count:6d}  {event}")
    assert examples >= min(EXAMPLES, 200)
