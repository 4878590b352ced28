"""The biometric lifecycle's promises, held while photos are in flight and the beat sweeps run.

A Hypothesis state machine plays, in random order, what happens to one organisation's photos:

- workers, each step split where the real code holds no lock: claim and detect (`photo_process_detect`), store
  (`photo_process_store`), search, store the search's results; a worker may be lost mid-way and come back late;
- people: the org admin erases subjects, enrols more photos and reopens cases, the caseworker closes cases and
  adds photos;
- the beat: the purge sweep, split into its listing and its purging, the stale-photo sweep, and the sealing of
  views;
- invitations: two org admins invite, and the admin demotes, deactivates and promotes them while invitations
  wait; invitees accept;
- the threshold, the candidates per face and the retention, changed through every door: the two steps on
  /settings/, its policy form, the admin (as an org admin and as a superuser), the API and `organisation_update`;
- the activity log: people view photos (each view a signed, numbered row), the beat seals them.

Erasure, closing, reopening and the sweeps land between any two of a worker's steps, and between the sweep's
listing and its purge. On PostgreSQL one more rule runs a worker's storing transaction in a thread, paused with
its locks taken, while an erasure, a purge, a close, a reopen or an upload runs in another thread: the real row
locks must order the two without a deadlock and without breaking a promise. Two more hold one transaction open
while another starts: a demotion (or deactivation) and the acceptance of the demoted admin's invitation, in
either order; a view and a seal, in either order.

After every step:
- no live face, encoding or file belongs to an erased subject or to a purged case or photo, and no file is left
  on disk that no live row names;
- an open case (a reopened one too) has none of its photos purged, and a purged case was closed for its whole
  retention when it was purged;
- no candidate names an erased subject unless it was made before the erasure (and then it is closed), and the
  gallery index a search would use holds exactly the searchable faces;
- every member joined on the authority of someone who could grant that role at that moment (as the
  organisation's chain tells it), and no usable invitation stands on someone who can no longer grant it;
- the threshold and candidates per face in use are those last confirmed on /settings/, and the retention the
  one last set there;
- the activity log verifies, unsealed views and all, and a view deleted at that moment (rolled back after) is
  reported.

Detection is synthetic (a fixed vector per photo, tiny JPEGs for the crop and review images), so that a step
costs milliseconds: 200 examples of up to 50 steps take about six minutes on PostgreSQL. The test prints how
many examples ran and what happened in them (how often a worker found its photo gone, a sweep kept a case
reopened after its listing, a writer waited for a storing worker's locks).

To add rules: give them a section of their own below, keep the people in `self.users`, and add their promises
as a `_check_*` method listed in `CHECKS`.
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
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.test import Client, override_settings
from django.urls import reverse
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
from portal import services as portal_services
from portal.audit import audit_chain_verify, audit_view_record, audit_views_seal, chain_of
from portal.models import AuditChainHead, AuditEvent, AuditViewCounter, Invitation, Membership, Organisation
from tests.conftest import wait_for
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

# CI runs 200 examples of up to 50 steps; LIFECYCLE_EXAMPLES=2000 (and LIFECYCLE_STEPS) for a longer hunt. Fewer
# steps miss the longer interleavings (an erasure between a probe's search and the storing of its results).
EXAMPLES = int(os.environ.get("LIFECYCLE_EXAMPLES", "200"))
STEPS = int(os.environ.get("LIFECYCLE_STEPS", "50"))
SUBJECTS = 3
CASES = 2
RETENTION_DAYS = 7
INVITERS = ("admin2", "admin3")  # org admins whom the admin demotes, deactivates and promotes again
ROLES = ("caseworker", "reviewer", "org_admin")
SETTINGS_FIELDS = ("distance_threshold", "max_candidates", "retention_days")
JOINER_PASSWORD = "a long passphrase nobody guesses 9"
_example = itertools.count()
_joiner = itertools.count()  # usernames of people who accept an invitation
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
        _activity_log_clear()
        self.org = OrganisationFactory(slug=f"lc-{n}", retention_days=RETENTION_DAYS)
        people = (("admin", "org_admin"), ("caseworker", "caseworker"), ("reviewer", "reviewer"))
        people += tuple((name, "org_admin") for name in INVITERS)
        self.users = {
            name: MembershipFactory(user=UserFactory(username=f"lc{n}-{name}"), organisation=self.org, role=role).user
            for name, role in people
        }
        self.users["root"] = get_user_model().objects.create_superuser(f"lc{n}-root", f"lc{n}-root@example.org", "x")
        # Who could grant what when the example began; the activity log says what changed since.
        self.roles_at_start = {self.users[name].pk: role for name, role in people}
        self.settings_at_start = (self.org.distance_threshold, self.org.max_candidates, self.org.retention_days)
        self.tokens: list[str] = []  # invitations sent, not (yet) accepted
        self.clients: dict[str, Client] = {}
        self.log_verified: tuple | None = None  # the state of the log the last check verified
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
        waited = _beside(worker, (paused, release), writer)
        EVENTS[f"{other} beside a storing worker: {'waited' if waited else 'went ahead'}"] += 1
        assert not worker.errors, worker.errors
        assert all(isinstance(error, services.ServiceError) for error in writer.errors), writer.errors
        self._count_store(photo_id)
        self._new_photos_show(subject, case)

    # Invitations: two org admins invite; the admin demotes, deactivates and promotes them while invitations wait

    @rule(inviter=st.sampled_from(INVITERS), role=st.sampled_from(ROLES))
    def org_admin_invites(self, inviter: str, role: str) -> None:
        try:
            _, token = portal_services.invitation_create(
                organisation=self.org,
                email=f"joiner{len(self.tokens)}@example.org",
                role=role,
                acting_user=self.users[inviter],
            )
        except portal_services.AccessError:
            EVENTS["invite: refused, the inviter may not grant the role now"] += 1
        else:
            self.tokens.append(token)
            EVENTS["invite: sent"] += 1

    @rule(who=st.sampled_from(INVITERS), role=st.sampled_from(ROLES))
    def admin_changes_role(self, who: str, role: str) -> None:
        membership = Membership.objects.get(user=self.users[who])
        portal_services.member_set_role(membership=membership, role=role, acting_user=self.users["admin"])
        EVENTS[f"role change to {role}"] += 1

    @rule(who=st.sampled_from(INVITERS), active=st.booleans())
    def admin_sets_active(self, who: str, active: bool) -> None:
        membership = Membership.objects.get(user=self.users[who])
        portal_services.member_set_active(membership=membership, active=active, acting_user=self.users["admin"])
        EVENTS["member reactivated" if active else "member deactivated"] += 1

    @precondition(lambda self: self.tokens)
    @rule(pick=st.integers(0, 63))
    def invitee_accepts(self, pick: int) -> None:
        self._accept(self.tokens.pop(pick % len(self.tokens)))

    def _accept(self, token: str) -> None:
        try:
            portal_services.invitation_accept(token=token, username=f"j{next(_joiner)}", password=JOINER_PASSWORD)
        except portal_services.AccessError as error:
            EVENTS[f"invitation refused: {_refusal_kind(error)}"] += 1
        else:
            EVENTS["invitation accepted"] += 1

    @precondition(lambda self: self.tokens and connection.vendor == "postgresql")
    @rule(
        pick=st.integers(0, 63),
        # One draw for both, so that every pairing comes up as often as the others.
        race=st.sampled_from([(c, first) for c in ("caseworker", "reviewer", "deactivate") for first in (True, False)]),
    )
    def invitee_accepts_while_inviter_loses_the_role(self, pick: int, race: tuple[str, bool]) -> None:
        """The demotion (or deactivation) and the acceptance, each in its own transaction: the first one holds its
        locks, uncommitted, while the second starts, and commits only once the second waits or is done."""
        change, change_first = race
        token = self.tokens.pop(pick % len(self.tokens))
        inviter = portal_services.invitation_find(token).invited_by
        membership = Membership.objects.get(user=inviter)
        admin = self.users["admin"]

        def demote() -> None:
            if change == "deactivate":
                portal_services.member_set_active(membership=membership, active=False, acting_user=admin)
            else:
                portal_services.member_set_role(membership=membership, role=change, acting_user=admin)

        first, second = (demote, lambda: self._accept(token)) if change_first else (lambda: self._accept(token), demote)
        order = "demotion first" if change_first else "acceptance first"
        EVENTS[f"invitation and demotion at once, {order}: {self._race(first, second)}"] += 1

    # The threshold and the retention, through every door: the settings page, the admin, the API and the services

    def _client(self, name: str) -> Client:
        if name not in self.clients:
            self.clients[name] = Client()
            self.clients[name].force_login(self.users[name])
        return self.clients[name]

    @rule(threshold=st.sampled_from([0.45, 0.5, 0.6, 0.8]), max_candidates=st.sampled_from([1, 5, 20]))
    def admin_confirms_threshold_on_the_page(self, threshold: float, max_candidates: int) -> None:
        response = self._client("admin").post(
            reverse("matching:organisation_settings"),
            {"action": "confirm", "threshold": threshold, "max_candidates": max_candidates, "understood": "on"},
        )
        assert response.status_code == 302, response.content[:500]
        EVENTS["threshold confirmed on /settings/"] += 1

    @rule(days=st.sampled_from([None, 0, RETENTION_DAYS, 30]))
    def admin_sets_retention_on_the_page(self, days: int | None) -> None:
        if Organisation.objects.get(pk=self.org.pk).retention_days == days:
            return  # the page refuses a change to the period in use; that refusal is tested on its own
        response = self._client("admin").post(
            reverse("matching:organisation_settings"),
            {"action": "retention", "retention_days": "" if days is None else days, "understood": "on"},
        )
        assert response.status_code == 302, response.content[:500]
        EVENTS["retention changed on /settings/"] += 1

    @rule(field=st.sampled_from(SETTINGS_FIELDS), value=st.sampled_from(["", "0", "1", "0.9", "50"]))
    def admin_posts_settings_in_the_policy_form(self, field: str, value: str) -> None:
        """The page's other form (the plain policy) posted with a setting that only its own step changes."""
        organisation = Organisation.objects.get(pk=self.org.pk)
        data = {f: getattr(organisation, f) for f in ("target_fmr", "fpir_ceiling", "audit_max_age_days")}
        response = self._client("admin").post(
            reverse("matching:organisation_settings"), {"action": "policy", **data, field: value}
        )
        assert response.status_code == 302, response.content[:500]
        EVENTS["policy form posted with a setting of its own step"] += 1

    @rule(
        persona=st.sampled_from(["admin", "root"]),
        field=st.sampled_from(SETTINGS_FIELDS),
        value=st.sampled_from(["", "0", "1", "0.9", "50"]),
    )
    def someone_edits_settings_in_the_admin(self, persona: str, field: str, value: str) -> None:
        organisation = Organisation.objects.get(pk=self.org.pk)
        form = {
            f: "" if getattr(organisation, f) is None else str(getattr(organisation, f))
            for f in ("name", "slug", "target_fmr", "fpir_ceiling", "audit_max_age_days", *SETTINGS_FIELDS)
        }
        form.update(permitted_purpose=organisation.permitted_purpose, legal_basis=organisation.legal_basis)
        form.update({field: value, "_save": "Save"})
        if organisation.keep_originals:
            form["keep_originals"] = "on"
        response = self._client(persona).post(reverse("admin:portal_organisation_change", args=[self.org.pk]), form)
        assert response.status_code == 302, response.content[:800]
        EVENTS[f"admin change form posted by {persona}"] += 1

    @rule(field=st.sampled_from(SETTINGS_FIELDS), value=st.sampled_from([None, 0, 1, 0.9, 50]))
    def someone_changes_settings_through_the_api_or_a_script(self, field: str, value) -> None:
        """The API has no route to the settings: a PATCH finds none. A script (or any future API view) calls the
        services, and `organisation_update` refuses the three."""
        for url in (f"/api/organisations/{self.org.pk}/", "/api/organisation/", "/api/settings/"):
            response = self._client("admin").patch(url, {field: value}, content_type="application/json")
            assert response.status_code >= 400, (url, response.status_code)
        with pytest.raises(portal_services.AccessError):
            portal_services.organisation_update(
                organisation=self.org, acting_user=self.users["admin"], **{field: value}
            )
        EVENTS["settings refused through the API and organisation_update"] += 1

    # The activity log: people look at photos (each look is a signed, numbered view), the beat seals them

    @rule(pick=st.integers(0, 63), who=st.sampled_from(["admin", "reviewer", "caseworker"]))
    def someone_views_a_photo(self, pick: int, who: str) -> None:
        photo_ids = list(Photo.objects.filter(organisation=self.org).order_by("pk").values_list("pk", flat=True))
        response = self._client(who).get(reverse("matching:photo_image", args=[photo_ids[pick % len(photo_ids)]]))
        EVENTS[f"photo viewed: {response.status_code}"] += 1
        response.close()

    @rule()
    def beat_seals_views(self) -> None:
        sealed = audit_views_seal(chain=chain_of(self.org.pk))
        EVENTS["views sealed" if sealed else "seal: no views pending"] += 1

    @precondition(lambda self: connection.vendor == "postgresql")
    @rule(view_first=st.booleans())
    def a_view_is_written_while_the_beat_seals(self, view_first: bool) -> None:
        """A view's transaction holds the chain's view counter, uncommitted, while the seal runs, or the seal holds
        the chain's head while a view is written. Neither may lose the view, nor count it twice."""
        photo = Photo.objects.filter(organisation=self.org, kind="probe").order_by("pk").first()
        view = lambda: audit_view_record(  # noqa: E731
            action="media.photo", actor=self.users["caseworker"], organisation_id=self.org.pk, target=photo
        )
        seal = lambda: audit_views_seal(chain=chain_of(self.org.pk))  # noqa: E731
        first, second = (view, seal) if view_first else (seal, view)
        order = "view first" if view_first else "seal first"
        EVENTS[f"view and seal at once, {order}: {self._race(first, second)}"] += 1

    def _race(self, first, second) -> str:
        """Run `first` in a thread's transaction and hold it, uncommitted, while `second` runs in another thread;
        commit once `second` is done or waits for a lock. Says whether `second` waited."""
        paused, release = threading.Event(), threading.Event()

        def held() -> None:
            try:
                with transaction.atomic():
                    first()
                    paused.set()
                    assert release.wait(60), "the held transaction was never released"
            finally:
                paused.set()

        holder, other = _Thread(held), _Thread(second)
        waited = _beside(holder, (paused, release), other)
        for thread in (holder, other):
            assert all(isinstance(e, (services.ServiceError, portal_services.AccessError)) for e in thread.errors), (
                thread.errors
            )
        return "the second waited" if waited else "the second went ahead"

    # What must hold after every step

    CHECKS = (
        "_check_nothing_gone_is_kept",
        "_check_open_cases_keep_their_photos",
        "_check_search_finds_no_one_gone",
        "_check_members_joined_on_authority",
        "_check_settings_in_use_were_confirmed",
        "_check_activity_log_verifies_and_shows_a_deletion",
    )

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

    def _check_members_joined_on_authority(self) -> None:
        """Every member who joined was created by someone who could grant that role at that moment, and no
        invitation still usable stands on someone who cannot grant its role now.

        What each person could do when is read from the organisation's chain, in its order: the roles at the start,
        then every role change, deactivation and reactivation, and the members created."""
        users = {user.pk: user for user in get_user_model().objects.filter(membership__organisation=self.org)}
        role = dict(self.roles_at_start)
        active = dict.fromkeys(role, True)
        by_name = {user.username: pk for pk, user in users.items()}
        actions = ("member.create", "member.role", "member.deactivate", "member.activate", "user.deactivate")
        events = AuditEvent.objects.filter(chain=chain_of(self.org.pk), seq__isnull=False, action__in=actions)
        for event in events.order_by("seq"):
            pk = by_name[event.detail["username"]]
            if event.action == "member.create":
                actor = event.actor
                assert actor.is_superuser or (role.get(actor.pk) == "org_admin" and active.get(actor.pk)), (
                    f"{event.detail['username']} joined as {event.detail['role']}, made by {actor}, who was then "
                    f"{role.get(actor.pk)}{'' if active.get(actor.pk) else ', deactivated'}"
                )
                role[pk], active[pk] = event.detail["role"], True
            elif event.action == "member.role":
                assert role[pk] == event.detail["from"], event.detail
                role[pk] = event.detail["to"]
            else:
                active[pk] = event.action == "member.activate"
        for pk, user in users.items():
            assert (user.membership.role, user.is_active) == (role[pk], active[pk]), f"{user}: the log disagrees"
        for invitation in Invitation.objects.filter(organisation=self.org).select_related("invited_by"):
            if invitation.usable:
                inviter = users[invitation.invited_by_id]
                assert inviter.is_active and inviter.membership.role == "org_admin", (
                    f"an invitation as {invitation.role} still stands on {inviter}, who can no longer grant it"
                )

    def _check_settings_in_use_were_confirmed(self) -> None:
        """The threshold and the candidates per face in use are those last confirmed on /settings/, and the
        retention is the one last set there; no other door changed any of them."""
        organisation = Organisation.objects.get(pk=self.org.pk)
        events = AuditEvent.objects.filter(chain=chain_of(self.org.pk), seq__isnull=False).order_by("-seq")
        threshold, candidates, retention = self.settings_at_start
        confirmed = events.filter(action="organisation.threshold_confirm").first()
        if confirmed is not None:
            threshold, candidates = confirmed.detail["threshold"][1], confirmed.detail["max_candidates"][1]
            assert organisation.threshold_confirmed_by_id == confirmed.actor_id
        assert (organisation.distance_threshold, organisation.max_candidates) == (threshold, candidates)
        assert organisation.threshold_confirmed_at is not None
        changed = events.filter(action="organisation.retention_change").first()
        if changed is not None:
            retention = changed.detail["retention_days"][1]
        assert organisation.retention_days == retention
        for update in events.filter(action="organisation.update"):
            assert not set(update.detail["changes"]) & set(SETTINGS_FIELDS), update.detail

    def _check_activity_log_verifies_and_shows_a_deletion(self) -> None:
        """The log verifies, unsealed views and all; and a view deleted now (the newest unsealed one, else a
        sealed one) is reported at once, before any seal. The deletion is rolled back."""
        chain = chain_of(self.org.pk)
        state = (
            AuditEvent.objects.count(),
            AuditEvent.objects.filter(sealed_by__isnull=False).count(),
            AuditViewCounter.objects.filter(chain=chain).values_list("last_view", flat=True).first(),
        )
        if state == self.log_verified:
            return  # nothing was written to the log since it was last verified
        result = audit_chain_verify()
        assert not result.breaks, [b.problem for b in result.breaks]
        views = AuditEvent.objects.filter(chain=chain, seq__isnull=True)
        victim = views.filter(sealed_by__isnull=True).order_by("-view_seq").first()
        if victim is None and views.exists():
            victim = views.order_by("id")[state[0] % views.count()]
        if victim is not None:
            with contextlib.suppress(_RolledBack), transaction.atomic():
                with connection.cursor() as cursor:  # as a database administrator would, bypassing the portal
                    cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE id = %s", [victim.pk])
                tampered = audit_chain_verify()
                raise _RolledBack
            unsealed = "unsealed" if victim.sealed_by_id is None else "sealed"
            assert tampered.breaks, f"a deleted {unsealed} view (number {victim.view_seq}) went unnoticed"
            EVENTS[f"log check: a deleted {unsealed} view was reported"] += 1
        self.log_verified = state


def _refusal_kind(error: Exception) -> str:
    for words, kind in (
        ("can no longer grant", "its maker can no longer grant the role"),
        ("withdrawn", "withdrawn"),
        ("already been used", "used"),
        ("expired", "expired"),
    ):
        if words in str(error):
            return kind
    raise AssertionError(f"an invitation refused for an unexpected reason: {error}")


class _RolledBack(Exception):
    """Raised to roll back what a check did to the database to see it reported."""


def _activity_log_clear() -> None:
    """Examples verify the whole log after every step; earlier examples' rows would only make that slower."""
    AuditEvent.objects.filter(sealed_by__isnull=False).update(sealed_by=None)
    AuditEvent.objects.all()._raw_delete(AuditEvent.objects.db)
    AuditChainHead.objects.all().delete()
    AuditViewCounter.objects.all().delete()


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


def _beside(holder: _Thread, pause: tuple[threading.Event, threading.Event], other: _Thread) -> bool:
    """Start `holder` and wait until it pauses with its locks held (it sets `pause[0]`); then start `other`, and
    release the holder (`pause[1]`) once `other` is done or waits for a lock. Returns whether `other` waited."""
    paused, release = pause
    try:
        holder.start()
        assert paused.wait(60), "the first thread never took its locks"
        other.start()
        wait_for(
            lambda: not other.is_alive() or other.waits_for_a_lock(),
            timeout=30,
            interval=0.005,
            message="the second thread to finish or to wait for a lock",
        )
        return other.is_alive()
    finally:
        release.set()
        holder.join(60)
        if other.ident:
            other.join(60)


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
