"""Concurrent writes to one case or one gallery end consistent, each in its own PostgreSQL connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections

from matching import services
from matching.models import Photo, Subject
from portal.models import AuditEvent, TaskOutbox
from tests.conftest import BIDEN, OBAMA, OBAMA_2

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgresql_only(reason="Concurrent writers, each in its own connection, take PostgreSQL's row locks."),
]

THREADS = 20


def run_together(work: Callable[[int], Any], count: int) -> tuple[list[Any], list[BaseException]]:
    """Runs work(0..count-1) in threads released at the same instant, each with its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(work(number))
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def test_twenty_concurrent_uploads_to_one_case_each_land_once(open_case, alice, faces):
    # Given an open case with one photo, and twenty photos read before the race
    case = open_case(OBAMA_2, reference="RACE-1", process=False)
    names = [OBAMA, BIDEN, OBAMA_2]
    uploads = [services.uploaded_image_read(faces.upload(names[n % 3])) for n in range(THREADS)]

    # When twenty caseworker requests add one photo each at the same instant
    results, errors = run_together(
        lambda n: services.case_add_photos(case=case, photos=[uploads[n]], acting_user=alice), THREADS
    )

    # Then every photo is stored and queued once, and the running totals show the adds ran one at a time
    assert errors == []
    assert len(results) == THREADS
    assert case.photos.count() == THREADS + 1
    assert TaskOutbox.objects.filter(task_name="matching.tasks.process_photo").count() == THREADS + 1
    totals = sorted(e.detail["photos_total"] for e in AuditEvent.objects.filter(action="case.add_photos"))
    assert totals == list(range(2, THREADS + 2))
    assert len(set(Photo.objects.filter(case=case).values_list("image", flat=True))) == THREADS + 1


def test_concurrent_enrolments_of_one_code_make_one_subject_with_every_photo(dana, faces):
    # Given a gallery, and photos read before the race
    gallery = services.gallery_create(organisation=dana.membership.organisation, name="Register", acting_user=dana)
    uploads = [services.uploaded_image_read(faces.upload(OBAMA)) for _ in range(THREADS)]

    # When twenty enrolments of the same code arrive together
    results, errors = run_together(
        lambda n: services.subject_enrol(
            gallery=gallery, code="P-RACE", display_name="Race", photos=[uploads[n]], acting_user=dana
        ),
        THREADS,
    )

    # Then none fails, and there is one subject holding all twenty photos
    assert errors == []
    assert {subject.pk for subject in results} == set(Subject.objects.values_list("pk", flat=True))
    subject = Subject.objects.get(gallery=gallery, code="P-RACE")
    assert subject.photos.count() == THREADS
    created = [e.detail["created"] for e in AuditEvent.objects.filter(action="subject.enrol")]
    assert sorted(created) == [False] * (THREADS - 1) + [True]
