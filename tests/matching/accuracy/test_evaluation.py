from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from matching.accuracy import evaluation
from matching.models import AuditGroup, AuditRate, AuditRun

ADULT = "age_group=18 and over"


def fmr_at(run: AuditRun, key: str, threshold: float = 0.6) -> float:
    rate = AuditRate.objects.get(group__run=run, group__key=key, threshold=threshold)
    return rate.fmr


def test_the_import_command_reports_what_it_refused(imported_audit):
    reasons = [row["detail"] for row in imported_audit.report if row["status"] == "refused"]

    # Group photos carry no identity; a few portraits have no face the HOG detector finds.
    assert "no identity given" in reasons
    assert any(r == "no face found" for r in reasons)
    assert any(r.endswith("faces found; one is required") for r in reasons)
    assert len(imported_audit.samples) + len(reasons) == len(imported_audit.report) == 552
    assert "photos accepted" in imported_audit.output
    assert imported_audit.attributes == ["sex", "race", "age_band", "age_group"]


def test_stored_rows_reproduce_the_known_demographic_ordering(audit_run):
    # Same-group false match rates at 0.6, read back from the stored rows.
    white = fmr_at(audit_run, f"race=White & {ADULT}")
    black = fmr_at(audit_run, f"race=Black & {ADULT}")
    asian = fmr_at(audit_run, f"race=Asian & {ADULT}")
    bands = {
        g.key: fmr_at(audit_run, g.key)
        for g in audit_run.groups.filter(key__startswith="age_band=").exclude(key__contains="&")
    }

    assert asian > white and black > white
    assert asian > 5 * white
    assert max(bands, key=bands.get) == "age_band=0-9"
    assert bands["age_band=0-9"] > 0.4


def test_every_interval_contains_its_estimate(audit_run):
    rates = AuditRate.objects.filter(group__run=audit_run)

    assert rates.count() > 500
    for rate in rates:
        if rate.fmr is not None:
            assert rate.fmr_low <= rate.fmr <= rate.fmr_high, rate
        if rate.fnmr is not None:
            assert rate.fnmr_low <= rate.fnmr <= rate.fnmr_high, rate


def test_small_groups_carry_the_insufficient_data_flag(audit_run):
    groups = list(audit_run.groups.all())

    # The rule reads people and the effective sample at the threshold in use, never the raw pair count
    small = [g for g in groups if g.identities < 20 or g.effective_pairs < 30]
    assert small and all(g.insufficient for g in small)
    assert all(not g.insufficient for g in groups if g not in small)
    assert audit_run.groups.get(key="race=Asian & age_band=0-9").insufficient
    assert any(g.insufficient and g.impostor_pairs >= 200 for g in groups)  # many pairs, little information


def test_the_threshold_in_use_is_measured_and_ratios_refer_to_the_best_group(audit_run, org):
    assert org.distance_threshold in audit_run.thresholds
    sufficient = AuditRate.objects.filter(group__run=audit_run, group__insufficient=False, threshold=0.6).exclude(
        group__key="all"
    )
    best = min(sufficient, key=lambda r: r.fmr)
    assert best.fmr_ratio_to_best == pytest.approx(1.0)
    assert all(r.fmr_ratio_to_best >= 1.0 - 1e-9 for r in sufficient if r.fmr_ratio_to_best is not None)


def test_impostor_distances_are_stored_sorted_and_complete(audit_run):
    group = audit_run.groups.get(key="race=White")

    distances = group.impostor_array
    assert len(distances) == group.impostor_pairs
    assert (distances[1:] >= distances[:-1]).all()
    rate = group.rates.get(threshold=0.6)
    assert int((distances <= 0.6).sum()) == rate.false_matches


def test_audit_run_json_is_valid_and_matches_the_stored_rows(audit_dataset, org, tmp_path):
    path = tmp_path / "audit.json"

    call_command(
        "audit_run", str(audit_dataset.pk), "--organisation", org.slug, "--json", str(path), stdout=io.StringIO()
    )

    document = json.loads(path.read_text())
    run = AuditRun.objects.get(pk=document["run"]["id"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert document["run"]["engine_version"] == run.engine_version
    stored = {g.key: g for g in AuditGroup.objects.filter(run=run).prefetch_related("rates")}
    assert {g["key"] for g in document["groups"]} == set(stored)
    for group in document["groups"]:
        row = stored[group["key"]]
        assert (group["identities"], group["impostor_pairs"], group["insufficient"]) == (
            row.identities,
            row.impostor_pairs,
            row.insufficient,
        )
        for rate, stored_rate in zip(group["rates"], row.rates.all(), strict=True):
            assert rate["threshold"] == stored_rate.threshold
            assert rate["false_matches"] == stored_rate.false_matches
            assert rate["fmr"] == stored_rate.fmr
            assert rate["fmr_ci95"] == [stored_rate.fmr_low, stored_rate.fmr_high]


def test_audit_run_prints_a_table(audit_dataset, org):
    out = io.StringIO()

    call_command("audit_run", str(audit_dataset.pk), "--organisation", org.slug, "--thresholds", "0.5,0.6", stdout=out)

    text = out.getvalue()
    assert "race=Asian" in text and "insufficient data" in text and "FMR@0.6" in text


def test_a_shared_set_is_run_for_each_organisation(audit_dataset, org, other_org):
    runs = evaluation.audit_run_for_each_organisation(dataset=audit_dataset, acting_user=None)

    assert {run.organisation for run in runs} == {org, other_org}


def test_a_manifest_without_identity_is_refused():
    with pytest.raises(evaluation.AuditError, match="lacks the column"):
        evaluation.evaluation_manifest_parse(b"file,sex\na.jpg,F\n")


def test_bookkeeping_columns_are_not_attributes():
    names, rows = evaluation.evaluation_manifest_parse(
        b"file,identity,sex,age,source_repo,age_band\na.jpg,p1,F,7,x/y,0-9\nb.jpg,p2,,31,x/z,30-44\n"
    )

    assert names == ["sex", "age_band", "age_group"]
    assert rows[0].attributes == {"sex": "F", "age_band": "0-9", "age_group": "under 18"}
    assert rows[1].attributes["sex"] == ""


def test_audit_validity_names_why_an_audit_does_not_count(audit_run, org):
    assert evaluation.audit_validity(org).valid

    AuditRun.objects.filter(pk=audit_run.pk).update(engine_version="face_recognition 0.9; dlib 1")
    assert "not the engine in use" in evaluation.audit_validity(org).reason

    AuditRun.objects.filter(pk=audit_run.pk).update(engine_version=audit_run.engine_version)
    org.audit_max_age_days = 0
    org.save()
    assert "days old" in evaluation.audit_validity(org).reason


def test_erasing_an_evaluation_set_deletes_its_encodings_and_keeps_its_runs(audit_run, dana):
    from matching.accuracy.evaluation import AuditError, audit_dataset_erase, audit_run_create
    from portal.models import AuditEvent

    dataset = audit_run.dataset

    erased = audit_dataset_erase(dataset=dataset, acting_user=dana)

    assert erased > 0 and not dataset.samples.exists()
    assert AuditRun.objects.filter(pk=audit_run.pk).exists()  # the measured rates hold no face
    assert AuditEvent.objects.filter(action="audit.dataset_erase", detail__samples=erased).exists()
    with pytest.raises(AuditError, match="fewer than two"):
        audit_run_create(dataset=dataset, organisation=audit_run.organisation, acting_user=dana)


def test_an_evaluation_set_whose_zip_names_one_file_twice_is_refused_and_nothing_is_stored(dana, org, media_root):
    import os

    from matching import bulk
    from matching.models import AuditDataset
    from tests.matching.test_bulk import zip_of_entries

    # Given a zip in which "a.jpg" and "./A.jpg" unpack to one file: which face is measured would depend on order
    archive = zip_of_entries(("a.jpg", b"first face"), ("./A.jpg", b"second face"))
    files_before = sorted(os.path.join(d, f) for d, _, fs in os.walk(media_root) for f in fs)
    datasets_before = AuditDataset.objects.count()  # the shared set other tests import may be there

    with pytest.raises(bulk.BulkRejected, match=r"a\.jpg and \./A\.jpg: the zip holds 2 entries that unpack"):
        evaluation.audit_dataset_create(
            name="Set", organisation=org, manifest=b"file,identity\na.jpg,p1\n", archive=archive, acting_user=dana
        )

    assert AuditDataset.objects.count() == datasets_before
    assert sorted(os.path.join(d, f) for d, _, fs in os.walk(media_root) for f in fs) == files_before


def test_a_stored_evaluation_set_whose_zip_names_one_file_twice_fails_and_keeps_nothing(dana, org):
    from django.core.files.base import ContentFile

    from matching.models import AuditDataset
    from tests.matching.test_bulk import zip_of_entries

    # Given an evaluation set stored before such zips were refused, waiting for its import
    dataset = AuditDataset(name="Old set", organisation=org, attributes=[], created_by=dana, rows_total=1)
    dataset.archive.save("old.zip", ContentFile(zip_of_entries(("a.jpg", b"1"), ("a.jpg", b"2"))), save=False)
    dataset.manifest.save("old.csv", ContentFile(b"file,identity\na.jpg,p1\n"), save=False)
    dataset.save()
    stored = [dataset.archive.name, dataset.manifest.name]

    # When the worker imports it
    evaluation.audit_dataset_import(dataset_id=dataset.pk)

    # Then it fails whole, saying why, with no sample and neither upload left
    dataset.refresh_from_db()
    assert dataset.status == "failed" and "a.jpg: the zip holds 2 entries" in dataset.failure_reason
    assert not dataset.samples.exists() and not dataset.archive and not dataset.manifest
    assert not any(dataset.archive.storage.exists(name) for name in stored)
