"""The models' own rules: the progress and summary that enrolment batches and evaluation sets share, and case
references."""

from __future__ import annotations

import pytest
from django.urls import reverse

from matching.models import AuditDataset, Case, EnrolmentBatch, reference_problem
from tests.factories import GalleryFactory

REPORT = [{"status": "enrolled"}, {"status": "refused"}, {"status": "accepted"}, {"status": "enrolled"}]


def test_each_import_names_its_own_accepted_rows_in_the_summary(org):
    batch = EnrolmentBatch(gallery=GalleryFactory(organisation=org), report=REPORT)
    dataset = AuditDataset(organisation=org, name="Set", report=REPORT)

    assert batch.summary == "2 enrolled, 1 refused"
    assert dataset.summary == "1 accepted, 1 refused"


def test_the_pages_poll_the_same_progress_until_it_is_finished(client, dana, org):
    # Given a running batch and a failed evaluation set
    batch = EnrolmentBatch.objects.create(
        gallery=GalleryFactory(organisation=org), archive="x.zip", manifest="x.csv", status="running", rows_total=4
    )
    dataset = AuditDataset.objects.create(organisation=org, name="Set", status="failed", rows_total=2, rows_done=1)
    client.force_login(dana)

    # When their pages are polled
    batch_progress = client.get(reverse("matching:batch_detail", args=[batch.pk]), {"format": "json"}).json()
    dataset_progress = client.get(reverse("matching:audit_dataset", args=[dataset.pk]), {"format": "json"}).json()

    # Then both answer in one shape, finished only once done or failed
    assert batch_progress == {"status": "running", "rows_total": 4, "rows_done": 0, "finished": False}
    assert dataset_progress == {"status": "failed", "rows_total": 2, "rows_done": 1, "finished": True}


# Case references: a documented set of characters, and file names that never carry anything else


@pytest.mark.parametrize("reference", ["C-1", "MP-2026/0042", "CR 2026.17_b", "7"])
def test_a_reference_of_letters_digits_and_the_listed_separators_is_accepted(reference):
    assert reference_problem(reference) is None


@pytest.mark.parametrize(
    ("reference", "named"),
    [
        ("a/../../b.exe;", "“;”"),
        ("safe\u202efdp.exe", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ('C-1"; filename=x', '“"”, “;” and “=”'),
        ("line\nbreak", "U+000A"),
        ("Åsa-12", "“Å”"),
    ],
    ids=["path-and-semicolon", "right-to-left-override", "header-syntax", "newline", "non-ascii-letter"],
)
def test_a_reference_with_any_other_character_is_refused_naming_it(reference, named):
    problem = reference_problem(reference)

    assert problem.startswith("A reference may hold only letters A-Z and a-z, digits 0-9, spaces and - _ . /")
    assert named in problem


@pytest.mark.parametrize("reference", ["../C-1", "C-1/", " ", "-"])
def test_a_reference_must_begin_and_end_with_a_letter_or_digit(reference):
    assert "begin and end with a letter or a digit" in reference_problem(reference)


@pytest.mark.parametrize(
    ("reference", "in_files"),
    [
        ("MP-2026/0042", "MP-2026-0042"),
        ("a/../../b.exe;", "a-b-exe"),
        ("safe\u202efdp.exe", "safe-fdp-exe"),
        ("Åsa 12", "Asa-12"),
        ("\u202e;;", ""),
        ("x" * 100, "x" * 60),
    ],
)
def test_a_reference_appears_in_file_names_as_ascii_letters_digits_and_hyphens_only(reference, in_files):
    assert Case(reference=reference).reference_for_files == in_files
