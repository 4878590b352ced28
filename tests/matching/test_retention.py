"""Closing and reopening cases, the retention purge, erasure that leaves nothing, and images that are gone."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from matching import services
from matching.models import Case, EnrolmentBatch, Face, Photo
from matching.tasks import purge_expired_cases
from portal.models import AuditEvent
from tests.conftest import BIDEN, OBAMA, OBAMA_2, decide, wait_for
from tests.factories import CaseFactory
from tests.matching.test_bulk import csv_bytes, make_zip


@pytest.fixture
def case(org, alice):
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    return CaseFactory(organisation=org, created_by=alice, reference="R-1")


def _close_api(client, case, reason="The child was found safe."):
    return client.post(reverse("case-close", args=[case.pk]), {"reason": reason}, content_type="application/json")


def _reopen_api(client, case, reason="New information came in."):
    return client.post(reverse("case-reopen", args=[case.pk]), {"reason": reason}, content_type="application/json")


# Closing and reopening


def test_a_caseworker_closes_a_case_on_its_page_and_sees_when_it_will_be_purged(client, alice, case):
    client.force_login(alice)
    before = client.get(reverse("matching:case_detail", args=[case.pk])).content.decode()
    assert reverse("matching:case_close", args=[case.pk]) in before and "30 days after the case is closed" in before

    response = client.post(
        reverse("matching:case_close", args=[case.pk]), {"reason": "The child was found safe."}, follow=True
    )

    case.refresh_from_db()
    due = case.closed_at + timedelta(days=30)
    page = response.content.decode()
    assert case.closed_by == alice and case.close_reason == "The child was found safe."
    assert f"will be purged on <strong>{timezone.localtime(due):%Y-%m-%d %H:%M}" in page
    assert reverse("matching:case_close", args=[case.pk]) not in page  # closed: no close control any more
    event = AuditEvent.objects.get(action="case.close", target_id=str(case.pk))
    assert event.actor == alice and event.detail["reason"] == "The child was found safe."


def test_closing_without_a_reason_is_refused_and_the_case_stays_open(client, alice, case):
    client.force_login(alice)

    page = client.post(reverse("matching:case_close", args=[case.pk]), {"reason": "   "}, follow=True)

    case.refresh_from_db()
    assert case.closed_at is None and "Give a reason" in page.content.decode()
    assert _close_api(client, case, reason="").status_code == 400
    assert not AuditEvent.objects.filter(action="case.close").exists()


def test_the_api_closes_a_case_and_says_when_it_will_be_purged(client, alice, case):
    client.force_login(alice)

    response = _close_api(client, case)
    again = _close_api(client, case)

    assert response.status_code == 200
    body = response.json()
    case.refresh_from_db()
    assert body["closed_by"] == "alice" and body["close_reason"] == "The child was found safe."
    assert body["purge_due_at"] == (case.closed_at + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    assert again.status_code == 409 and "already closed" in again.content.decode()
    detail = client.get(reverse("case-detail", args=[case.pk])).json()
    assert detail["purge_due_at"] == body["purge_due_at"] and detail["close_reason"] == "The child was found safe."


def test_an_org_admin_reopens_a_closed_case_and_nothing_is_purged_while_it_is_open(client, alice, dana, case, org):
    services.case_close(case=case, acting_user=alice, reason="Found.")
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=29))
    client.force_login(dana)

    response = _reopen_api(client, case)

    case.refresh_from_db()
    assert response.status_code == 200 and response.json()["closed_at"] is None and case.closed_at is None
    event = AuditEvent.objects.get(action="case.reopen", target_id=str(case.pk))
    assert event.actor == dana and event.detail["reason"] == "New information came in."
    assert services.cases_purge_expired(now=timezone.now() + timedelta(days=400)) == 0


def test_the_page_offers_reopening_to_org_admins_only(client, alice, dana, case):
    services.case_close(case=case, acting_user=alice, reason="Found.")
    reopen = reverse("matching:case_reopen", args=[case.pk])

    client.force_login(alice)
    as_caseworker = client.get(reverse("matching:case_detail", args=[case.pk])).content.decode()
    refused = client.post(reopen)
    client.force_login(dana)
    as_admin = client.get(reverse("matching:case_detail", args=[case.pk])).content.decode()
    reopened = client.post(reopen, follow=True)

    assert reopen not in as_caseworker and refused.status_code == 404
    assert reopen in as_admin and "Case reopened" in reopened.content.decode()
    case.refresh_from_db()
    assert case.closed_at is None


# Attack tests: the insider most likely to try


def test_a_reviewer_cannot_close_a_case(client, bob, case):
    client.force_login(bob)

    api = _close_api(client, case)
    page = client.post(reverse("matching:case_close", args=[case.pk]), {"reason": "Closing it for them."})

    assert (api.status_code, page.status_code) == (403, 404)
    case.refresh_from_db()
    assert case.closed_at is None


def test_another_organisation_cannot_close_or_reopen_a_case(client, charlie, erin, alice, case):
    client.force_login(charlie)
    api = _close_api(client, case)
    page = client.post(reverse("matching:case_close", args=[case.pk]), {"reason": "Not mine."})
    assert (api.status_code, page.status_code) == (404, 404)

    services.case_close(case=case, acting_user=alice, reason="Found.")
    client.force_login(erin)
    api = _reopen_api(client, case)
    page = client.post(reverse("matching:case_reopen", args=[case.pk]))

    assert (api.status_code, page.status_code) == (404, 404)
    case.refresh_from_db()
    assert case.closed_at is not None


def test_a_caseworker_cannot_reopen_a_case_to_stop_its_purge(client, alice, case):
    services.case_close(case=case, acting_user=alice, reason="Found.")
    client.force_login(alice)

    response = _reopen_api(client, case)

    assert response.status_code == 403
    with pytest.raises(services.ServiceError, match="Only the organisation's admins"):
        services.case_reopen(case=case, acting_user=alice)
    case.refresh_from_db()
    assert case.closed_at is not None


def test_a_purged_case_cannot_be_reopened(client, alice, dana, case):
    services.case_close(case=case, acting_user=alice, reason="Found.")
    services.cases_purge_expired(now=timezone.now() + timedelta(days=31))
    client.force_login(dana)

    response = _reopen_api(client, case)

    assert response.status_code == 409 and "purged" in response.content.decode()


# The beat purge, on time


def test_the_beat_purge_runs_when_retention_ends_and_not_before(alice, open_case, org, faces):
    org.retention_days = 7
    org.keep_originals = True
    org.save(update_fields=["retention_days", "keep_originals"])
    case = open_case(OBAMA_2, reference="P-1")
    services.case_close(case=case, acting_user=alice, reason="Found.")
    photo = case.photos.get()
    files = [photo.image.path, photo.original.path, *[f.crop.path for f in photo.faces.all()]]
    assert len(files) == 3 and all(os.path.exists(f) for f in files)
    assert "matching.tasks.purge_expired_cases" in {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}

    # A minute before the retention ends: nothing is purged
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=7) + timedelta(minutes=1))
    assert purge_expired_cases.apply().get() == 0
    assert all(os.path.exists(f) for f in files)

    # A minute after: the photo, its original, its crops and its encodings go
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=7) - timedelta(minutes=1))
    assert purge_expired_cases.apply().get() == 1
    assert not any(os.path.exists(f) for f in files)
    photo.refresh_from_db()
    assert not photo.image and not photo.original and photo.purged_at
    assert all(bytes(f.encoding) == b"" and not f.crop for f in Face.objects.filter(photo=photo))


# Gone means 404 or 410, never 500


def test_erased_and_purged_images_answer_410_not_500(client, alice, dana, bob, enrol, open_case):
    subject = enrol("OBAMA-REF", OBAMA)
    reference_photo = subject.photos.get()
    reference_face = Face.objects.get(subject=subject)
    case = open_case(OBAMA_2, reference="G-1")
    probe_photo = case.photos.get()
    probe_face = probe_photo.faces.get()
    services.subject_erase(subject=subject, acting_user=dana)
    services.case_close(case=case, acting_user=alice, reason="Found.")
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=365))
    case.organisation.retention_days = 1
    case.organisation.save(update_fields=["retention_days"])
    services.cases_purge_expired()
    client.force_login(bob)

    answers = [
        client.get(reverse("matching:photo_image", args=[reference_photo.pk])).status_code,
        client.get(reverse("matching:face_crop", args=[reference_face.pk])).status_code,
        client.get(reverse("matching:photo_image", args=[probe_photo.pk])).status_code,
        client.get(reverse("matching:face_crop", args=[probe_face.pk])).status_code,
    ]

    assert answers == [410, 410, 410, 410]
    assert not AuditEvent.objects.filter(action__startswith="media.").exists()  # no view was recorded


def test_another_organisation_gets_404_for_a_purged_image_too(client, charlie, dana, enrol):
    subject = enrol("OBAMA-REF", OBAMA)
    photo = subject.photos.get()
    services.subject_erase(subject=subject, acting_user=dana)
    client.force_login(charlie)

    assert client.get(reverse("matching:photo_image", args=[photo.pk])).status_code == 404


@pytest.mark.parametrize("gone", ["subject erased", "photo purged"])
def test_a_face_whose_subject_or_photo_is_gone_answers_410_even_if_its_own_row_was_left_live(
    client, bob, enrol, open_case, gone
):
    # Given a face whose own row still looks live, but whose subject was erased or whose photo was purged (what a
    # worker storing faces during an erasure or a purge used to leave behind)
    subject = enrol("OBAMA-REF", OBAMA)
    face = Face.objects.get(subject=subject)
    if gone == "subject erased":
        type(subject).objects.filter(pk=subject.pk).update(erased_at=timezone.now())
    else:
        face = open_case(OBAMA_2, reference="G-2").photos.get().faces.get()
        Photo.objects.filter(pk=face.photo_id).update(purged_at=timezone.now())
    client.force_login(bob)

    # When a reviewer asks for its crop and its aligned image
    answers = [
        client.get(reverse("matching:face_crop", args=[face.pk])).status_code,
        client.get(reverse("matching:face_aligned", args=[face.pk])).status_code,
    ]

    # Then both are gone, and no view is recorded
    assert answers == [410, 410]
    assert not AuditEvent.objects.filter(action__startswith="media.").exists()


# Erasure that leaves nothing


def _bulk_import(dana, gallery, faces, django_capture_on_commit_callbacks, *rows: tuple[str, str]):
    archive = make_zip({Path(name).name: faces.read(name) for _, name in rows})
    manifest = csv_bytes("code,file,display_name", *[f"{code},{Path(name).name},Person {code}" for code, name in rows])
    with django_capture_on_commit_callbacks(execute=True):
        return services.enrolment_batch_create(
            gallery=gallery,
            archive=SimpleUploadedFile("p.zip", archive),
            manifest=SimpleUploadedFile("m.csv", manifest),
            acting_user=dana,
        )


def test_an_import_keeps_its_report_but_not_its_archive(
    settings, tmp_path, dana, org, faces, eager_tasks, django_capture_on_commit_callbacks
):
    # A media folder of its own: other tests' refused imports may leave archives in the shared one
    settings.MEDIA_ROOT = str(tmp_path / "media")
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)

    batch = _bulk_import(dana, gallery, faces, django_capture_on_commit_callbacks, ("B-1", BIDEN))

    batch.refresh_from_db()
    assert batch.status == "done" and [r["status"] for r in batch.report] == ["enrolled"]
    assert not batch.archive and not batch.manifest
    assert not list((Path(settings.MEDIA_ROOT) / "batches").rglob("*.zip"))


def test_an_erased_code_is_no_longer_listed_by_its_import(
    client, dana, org, faces, eager_tasks, django_capture_on_commit_callbacks
):
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)
    batch = _bulk_import(dana, gallery, faces, django_capture_on_commit_callbacks, ("B-1", BIDEN), ("O-1", OBAMA))
    client.force_login(dana)
    erased = gallery.subjects.get(code="B-1")

    assert client.delete(reverse("subject-detail", args=[erased.pk])).status_code == 204
    body = client.get(reverse("import-detail", args=[batch.pk])).json()

    assert "B-1" not in str(body) and "biden" not in str(body).lower()
    assert [r["code"] for r in body["report"]] == ["", "O-1"] and body["enrolled"] == 2


def test_after_erasing_every_subject_and_purging_every_case_no_file_is_left(
    client,
    settings,
    tmp_path,
    alice,
    bob,
    dana,
    reviewers,
    org,
    faces,
    eager_tasks,
    django_capture_on_commit_callbacks,
    enrol,
):
    # given: a fresh media folder, originals kept, subjects enrolled one by one and in bulk, a case with a
    # disclosure report, and an evaluation set imported from a zip
    from matching.accuracy.evaluation import audit_dataset_create
    from reviews.disclosure import disclosure_request
    from reviews.models import DisclosureReport

    media = tmp_path / "media"
    settings.MEDIA_ROOT = str(media)
    org.keep_originals = True
    org.retention_days = 0
    org.save(update_fields=["keep_originals", "retention_days"])
    with django_capture_on_commit_callbacks(execute=True):
        enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    gallery = org.galleries.get()
    _bulk_import(dana, gallery, faces, django_capture_on_commit_callbacks, ("B-1", BIDEN))
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(
            reverse("case-list"),
            {"reference": "W-1", "title": "t", "purpose": "Locate a missing child", "photos": [faces.upload(OBAMA_2)]},
        )
    case = Case.objects.get(pk=created.json()["id"])
    assert case.candidates.exists()
    # reports are of the closed record, requested by an org admin once nothing is left for her to decide
    for candidate in case.candidates.all():
        for reviewer in reviewers:
            decide(candidate, reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        report = disclosure_request(case=case, acting_user=dana)
        audit_dataset_create(
            name="Eval",
            organisation=org,
            manifest=csv_bytes("file,identity,sex", f"{Path(OBAMA).name},obama,M", f"{Path(BIDEN).name},biden,M"),
            archive=make_zip({Path(OBAMA).name: faces.read(OBAMA), Path(BIDEN).name: faces.read(BIDEN)}),
            acting_user=dana,
        )
    assert DisclosureReport.objects.get(pk=report.pk).status == "done"
    assert len([p for p in media.rglob("*") if p.is_file()]) >= 8

    # when: every subject is erased through the API, and every case is closed and purged
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        for subject in gallery.subjects.all():
            assert client.delete(reverse("subject-detail", args=[subject.pk])).status_code == 204
    with django_capture_on_commit_callbacks(execute=True):
        for each in Case.objects.filter(organisation=org):
            assert _close_api(client, each).status_code == 200
        services.cases_purge_expired()

    # then: nothing is left under MEDIA_ROOT, and the log says what became of the disclosure
    left = sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())
    assert left == []
    assert not Photo.objects.exclude(image="").exists() and not Photo.objects.exclude(original="").exists()
    assert not Face.objects.exclude(crop="").exists() and not Face.objects.exclude(encoding=b"").exists()
    assert not EnrolmentBatch.objects.exclude(archive="").exists()
    actions = list(
        AuditEvent.objects.filter(target_type="reviews.DisclosureReport", target_id=str(report.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["disclosure.regenerate", "disclosure.withdraw"]
    assert DisclosureReport.objects.get(pk=report.pk).status == "withdrawn"


def test_a_closed_case_takes_no_more_photos(alice, case, faces):
    services.case_close(case=case, acting_user=alice, reason="Found.")

    with pytest.raises(services.ServiceError, match="This case is closed"):
        services.case_add_photos(
            case=case, photos=[services.uploaded_image_read(faces.upload(OBAMA))], acting_user=alice
        )

    assert not case.photos.exists()


def test_an_erased_code_cannot_be_filled_again_one_by_one_or_in_bulk(
    dana, org, faces, enrol, eager_tasks, django_capture_on_commit_callbacks
):
    # Photos added to the tombstone would bring the erased person back into every search, under no name.
    subject = enrol("OBAMA-REF", OBAMA)
    services.subject_erase(subject=subject, acting_user=dana)

    with pytest.raises(services.ServiceError, match="was erased; enrol the person under a new code"):
        services.subject_enrol(
            gallery=subject.gallery,
            code="OBAMA-REF",
            photos=[services.uploaded_image_read(faces.upload(OBAMA_2))],
            acting_user=dana,
        )
    batch = _bulk_import(dana, subject.gallery, faces, django_capture_on_commit_callbacks, ("OBAMA-REF", OBAMA_2))

    batch.refresh_from_db()
    assert [(r["status"], "was erased" in r["detail"]) for r in batch.report] == [("refused", True)]
    assert not Photo.objects.filter(subject=subject).exclude(image="").exists()


def test_an_erasure_during_an_import_stays_redacted_in_its_report(
    dana, org, faces, eager_tasks, django_capture_on_commit_callbacks, monkeypatch
):
    from matching.services import galleries

    # Given an import whose first subject is erased while the second row is being enrolled
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)
    real_row_enrol = galleries._batch_row_enrol

    def erase_then_enrol(batch, row, archive):
        if row.code == "O-1":
            services.subject_erase(subject=gallery.subjects.get(code="B-1"), acting_user=dana)
        return real_row_enrol(batch, row, archive)

    monkeypatch.setattr(galleries, "_batch_row_enrol", erase_then_enrol)

    # When the import finishes
    batch = _bulk_import(dana, gallery, faces, django_capture_on_commit_callbacks, ("B-1", BIDEN), ("O-1", OBAMA))

    # Then the erased code is not in the report the import wrote after the erasure
    batch.refresh_from_db()
    assert [r["code"] for r in batch.report] == ["", "O-1"]


@pytest.mark.postgresql_only("Row locks need PostgreSQL; SQLite locks the whole database.")
@pytest.mark.django_db(transaction=True)
def test_closing_a_case_does_not_block_the_worker_from_adding_rows_to_it(alice, open_case):
    import threading

    from django.db import OperationalError, connection, transaction

    from matching.models import Photo
    from matching.services import case_close

    # Given a caseworker closing a case in a transaction still open (as a slow request would hold it)
    case = open_case(OBAMA_2, reference="C-LOCK", process=False)
    holding, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def closing() -> None:
        from django.db import connection as own

        try:
            with transaction.atomic():
                case_close(case=case, acting_user=alice, reason="Found safe.")
                holding.set()
                release.wait(15)
        except BaseException as error:  # surfaced below
            failure.append(error)
        finally:
            own.close()

    thread = threading.Thread(target=closing)
    thread.start()
    assert holding.wait(10)
    try:
        # When the worker, meanwhile, stores a row that refers to the case (its foreign key takes a share lock)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '1s'")
            Photo.objects.create(
                organisation=case.organisation, case=case, kind="probe", image="x.jpg", width=10, height=10
            )
    except OperationalError as error:
        pytest.fail(f"the worker waited on the case's row lock: {error}")
    finally:
        release.set()
        thread.join(20)

    # Then it did not wait, which is what lets the worker and a closing or reopening request (each taking
    # the activity log's chain lock next) never deadlock; the close itself went through
    assert not failure
    case.refresh_from_db()
    assert case.closed_at is not None


# Changing the retention period: its own step on /settings/, which says first what it does to closed cases


def _closed_cases(org, alice) -> tuple[Case, Case]:
    """With a 30-day retention: OLD-1 closed 20 days ago (due in 10), RECENT-1 closed 2 days ago (due in 28),
    beside an open case and a purged one that no change touches."""
    now = timezone.now()
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    old = CaseFactory(organisation=org, created_by=alice, reference="OLD-1")
    recent = CaseFactory(organisation=org, created_by=alice, reference="RECENT-1")
    CaseFactory(organisation=org, created_by=alice, reference="OPEN-1")
    purged = CaseFactory(organisation=org, created_by=alice, reference="PURGED-1")
    Case.objects.filter(pk=old.pk).update(closed_at=now - timedelta(days=20))
    Case.objects.filter(pk=recent.pk).update(closed_at=now - timedelta(days=2))
    Case.objects.filter(pk=purged.pk).update(closed_at=now - timedelta(days=40), purged_at=now - timedelta(days=10))
    old.refresh_from_db()
    recent.refresh_from_db()
    return old, recent


def _day(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d}"


def test_shortening_the_retention_says_which_closed_cases_become_due_before_it_is_confirmed(client, alice, dana, org):
    # Given two closed cases under a 30-day retention
    old, recent = _closed_cases(org, alice)
    url = reverse("matching:organisation_settings")
    client.force_login(dana)

    # When dana asks what 7 days would do
    page = client.get(url, {"retention_days": "7"}).content.decode()

    # Then the page says, case by case and with dates, which become due now and which are purged earlier
    preview = page[page.index('id="retention-preview"') :]
    due_now = preview[preview.index('id="retention-due-now"') :]
    assert "1 closed case becomes due now" in due_now
    assert "OLD-1" in due_now and f"closed {_day(old.closed_at)}" in due_now
    earlier = preview[preview.index('id="retention-earlier"') :]
    assert "1 closed case is purged earlier" in earlier and "RECENT-1" in earlier
    assert f"{_day(recent.closed_at + timedelta(days=30))} → {_day(recent.closed_at + timedelta(days=7))}" in earlier
    assert "OPEN-1" not in preview and "PURGED-1" not in preview
    org.refresh_from_db()
    assert org.retention_days == 30  # nothing changes by looking

    # When she confirms without saying she has read it, nothing changes
    refused = client.post(url, {"action": "retention", "retention_days": "7"})
    assert refused.status_code == 400 and 'id="retention-preview"' in refused.content.decode()
    org.refresh_from_db()
    assert org.retention_days == 30

    # When she confirms
    response = client.post(url, {"action": "retention", "retention_days": "7", "understood": "on"}, follow=True)

    # Then the period is 7 days, she is told what it did, and the log names the cases
    org.refresh_from_db()
    assert org.retention_days == 7
    assert "1 closed case is purged by the next sweep" in response.content.decode()
    event = AuditEvent.objects.get(action="organisation.retention_change")
    assert event.actor == dana and event.detail["retention_days"] == [30, 7]
    assert event.detail["cases"] == {"due_now": [old.pk], "earlier": [recent.pk], "later": [], "no_longer": []}
    # and the next sweep purges the case that became due, and only it
    services.cases_purge_expired()
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.purged_at is not None and recent.purged_at is None


def test_clearing_the_retention_says_which_closed_cases_are_no_longer_purged(client, alice, dana, org):
    old, recent = _closed_cases(org, alice)
    url = reverse("matching:organisation_settings")
    client.force_login(dana)

    # When dana asks what an empty retention would do
    page = client.get(url, {"retention_days": ""}).content.decode()

    # Then the page says that both closed cases stop being purged, and when they were due
    kept = page[page.index('id="retention-no-longer"') :]
    assert "2 closed cases are no longer purged" in kept
    assert f"OLD-1</strong>, closed {_day(old.closed_at)}, was due {_day(old.purge_due_at)}" in kept
    assert "RECENT-1" in kept

    # When she confirms
    client.post(url, {"action": "retention", "retention_days": "", "understood": "on"})

    # Then closed cases are kept until erased by hand, and the log says which cases that stopped
    org.refresh_from_db()
    assert org.retention_days is None
    event = AuditEvent.objects.get(action="organisation.retention_change")
    assert event.detail["retention_days"] == [30, None]
    assert sorted(event.detail["cases"]["no_longer"]) == sorted([old.pk, recent.pk])


def test_lengthening_the_retention_postpones_closed_cases_and_says_so(alice, dana, org):
    old, recent = _closed_cases(org, alice)

    effect = services.retention_change_effect(organisation=org, retention_days=60)

    assert [c["case_id"] for c in effect["later"]] == [old.pk, recent.pk]
    assert effect["later"][0]["due_before"] == old.closed_at + timedelta(days=30)
    assert effect["later"][0]["due_after"] == old.closed_at + timedelta(days=60)
    assert effect["due_now"] == effect["earlier"] == effect["no_longer"] == []


def test_only_the_organisations_admin_changes_its_retention_and_only_to_a_sane_value(alice, bob, dana, erin, org):
    _closed_cases(org, alice)

    for user in (alice, bob, erin):
        with pytest.raises(services.ServiceError, match="org admin"):
            services.organisation_retention_set(organisation=org, retention_days=None, acting_user=user)
    for days in (-1, 100_000):
        with pytest.raises(services.ServiceError, match="retention"):
            services.organisation_retention_set(organisation=org, retention_days=days, acting_user=dana)

    org.refresh_from_db()
    assert org.retention_days == 30
    assert not AuditEvent.objects.filter(action="organisation.retention_change").exists()


# The sweep and the erasure against work that started before them


def _waits_for_a_lock(pids: list[int]) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", pids[:1] or [0])
        return cursor.fetchone() is not None


def _in_thread(target, pids: list[int], errors: list[BaseException], results: list):
    import threading

    from django.db import connection, connections

    def run() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            results.append(target())
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("change", ["reopened", "retention lengthened"])
@pytest.mark.postgresql_only("The sweep is held between its listing and its lock by a real row lock.")
@pytest.mark.django_db(transaction=True)
def test_a_case_reopened_after_the_sweep_listed_it_keeps_its_photos(alice, dana, org, open_case, change):
    from django.db import transaction

    from portal.models import Organisation

    # Given a case closed past its retention, with its probe photo and face
    org.retention_days = 7
    org.save(update_fields=["retention_days"])
    case = open_case(OBAMA_2, reference="R-SWEEP")
    services.case_close(case=case, acting_user=alice, reason="Found safe.")
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=8))
    photo = case.photos.get()
    files = [photo.image.path, *[face.crop.path for face in photo.faces.all()]]
    pids: list[int] = []
    errors: list[BaseException] = []
    purged: list[int] = []

    # When the beat sweep lists the case and then waits for its row, which the org admin's request holds
    with transaction.atomic():
        Case.objects.select_for_update(no_key=True).get(pk=case.pk)
        sweep = _in_thread(services.cases_purge_expired, pids, errors, purged)
        wait_for(lambda: _waits_for_a_lock(pids), timeout=30, message="the sweep to wait for the case's row")
        # and the org admin reopens the case (or lengthens the retention) and commits
        if change == "reopened":
            services.case_reopen(case=case, acting_user=dana, reason="New sighting.")
        else:
            Organisation.objects.filter(pk=org.pk).update(retention_days=30)
    sweep.join(60)
    assert not errors, errors

    # Then the sweep, which goes on after the commit, purges nothing: the case keeps its photos
    assert purged == [0]
    case.refresh_from_db()
    photo.refresh_from_db()
    assert case.purged_at is None and photo.purged_at is None and photo.image
    assert all(os.path.exists(path) for path in files)
    assert not Face.objects.filter(photo=photo, purged_at__isnull=False).exists()
    assert not AuditEvent.objects.filter(action="case.purge").exists()


@pytest.mark.postgresql_only("The erasure is held open while the enrolment runs; row locks order the two.")
@pytest.mark.django_db(transaction=True)
def test_a_photo_enrolled_while_its_subject_is_erased_is_refused_or_erased(dana, faces, enrol, monkeypatch):
    import threading

    from matching.models import Subject
    from matching.services import retention

    # Given an erasure of a subject that has purged its photos and not yet committed
    subject = enrol("OBAMA-REF", OBAMA)
    paused, release = threading.Event(), threading.Event()
    real_redact = retention._batch_reports_redact

    def pausing_redact(erased):
        paused.set()
        assert release.wait(60)
        return real_redact(erased)

    monkeypatch.setattr(retention, "_batch_reports_redact", pausing_redact)
    erasure_errors: list[BaseException] = []
    erasure = _in_thread(
        lambda: services.subject_erase(subject=Subject.objects.get(pk=subject.pk), acting_user=dana),
        [],
        erasure_errors,
        [],
    )
    assert paused.wait(60)
    upload = services.uploaded_image_read(faces.upload(OBAMA_2))

    # When the org admin adds a photo to the same subject meanwhile
    pids: list[int] = []
    enrol_errors: list[BaseException] = []
    enrolment = _in_thread(
        lambda: services.subject_enrol(gallery=subject.gallery, code="OBAMA-REF", photos=[upload], acting_user=dana),
        pids,
        enrol_errors,
        [],
    )
    wait_for(
        lambda: not enrolment.is_alive() or _waits_for_a_lock(pids),
        timeout=30,
        message="the enrolment to finish or wait for the subject's row",
    )
    release.set()
    erasure.join(60)
    enrolment.join(60)
    assert not erasure_errors, erasure_errors

    # Then the enrolment waited for the erasure and was refused: the erased subject has no live photo
    assert [str(error) for error in enrol_errors] == [
        "The subject “OBAMA-REF” was erased; enrol the person under a new code."
    ]
    assert not Photo.objects.filter(subject=subject, purged_at__isnull=True).exists()
