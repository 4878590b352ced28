"""The org admin's remaining journeys in headless Chromium: setting the review policy, settling an escalation,
and changing a member's role; each followed to what the other people then see."""

from __future__ import annotations

import pytest

from matching.models import Candidate, Outcome, Photo
from portal.models import Membership
from reviews.models import ReviewPolicy
from tests.browser.conftest import JOURNEY_SHOTS, images_loaded, log_in
from tests.conftest import OBAMA, OBAMA_2, decide, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUEUE = "/admin/reviews/reviewitem/"


@pytest.fixture
def candidate(enrol, open_case) -> Candidate:
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")
    case = open_case(OBAMA_2, reference="J-P1")
    # A worker left running by an earlier test may claim the photo first; either way it finishes.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    return case.candidates.get()


def _open_item(page, live_server, candidate: Candidate) -> None:
    page.goto(f"{live_server.url}{QUEUE}{candidate.pk}/change/")
    page.wait_for_selector("#review-status")
    images_loaded(page, "#face-probe, #face-gallery")


def test_org_admin_sets_the_review_policy_and_reviewers_work_to_it(
    page, browser, journey_shot, live_server, dana, reviewers, candidate, password
):
    # Given dana, whose organisation still runs on the default policy (two confirmations, scores hidden)
    assert not ReviewPolicy.objects.exists()
    log_in(page, live_server, "dana", password)

    # When she sets three confirmations and hides the scores until a reviewer has compared the features
    page.goto(f"{live_server.url}/admin/reviews/reviewpolicy/add/")
    page.fill("input[name=required_confirmations]", "3")
    page.check("input[name=hide_scores_until_compared]")
    journey_shot("form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    row = page.locator("#result_list tbody tr")
    assert row.count() == 1 and "3" in row.inner_text()
    policy = ReviewPolicy.objects.get()
    assert (policy.required_confirmations, policy.hide_scores_until_compared) == (3, True)

    # Then bob's page says three confirmations, and shows no distance or rank until he has compared
    bob_page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    log_in(bob_page, live_server, "bob", password)
    _open_item(bob_page, live_server, candidate)
    status = bob_page.inner_text("#review-status")
    assert "needs 3 confirmations" in status
    assert f"{candidate.distance:.3f}" not in bob_page.inner_text("body")
    bob_page.context.close()


def test_org_admin_settles_an_escalation_and_the_caseworker_sees_the_result(
    page, browser, journey_shot, live_server, dana, alice, reviewers, trained, candidate, password
):
    # Given two reviewers who disagree, which escalates the candidate, and dana, trained, who took no part
    # (scores shown: this journey is about settling)
    from reviews.services import review_policy_update

    review_policy_update(organisation=candidate.organisation, acting_user=dana, hide_scores_until_compared=False)
    bob, rita = reviewers
    decide(candidate, bob, conclusion="identification", reason="Ears, nose and jaw agree.")
    decide(candidate, rita, conclusion="exclusion", reason="The ear lobes differ clearly.")
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.ESCALATED
    trained(dana)

    # When a reviewer who took part opens it, he sees his own worksheet, may neither settle nor correct it,
    # and is told why
    bob_page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    log_in(bob_page, live_server, "bob", password)
    _open_item(bob_page, live_server, candidate)
    assert bob_page.is_disabled("#worksheet .review-submit button")
    assert "another senior decider must close it" in bob_page.inner_text("#review-status")
    assert "Record a correction" not in bob_page.inner_text("#review-status")
    assert "an org admin or the senior reviewer settles it" in bob_page.inner_text("#worksheet")
    bob_page.screenshot(path=str(JOURNEY_SHOTS / "escalated-participant.png"), full_page=True)
    bob_page.context.close()

    # And when dana opens the escalated queue, the item is there; she sees both decisions and settles it
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "dana", password)
    page.goto(f"{live_server.url}{QUEUE}?items=escalated")
    assert page.locator("#result_list tbody tr").count() == 1
    # she analyses the probe herself first (each reviewer records their own analysis)
    page.goto(f"{live_server.url}{QUEUE}{candidate.pk}/change/")
    page.wait_for_selector("#analysis")
    page.check("input[name=analysis_value][value=limited]")
    page.check("input[name=analysis_limits][value=pose]")
    page.click("#review-save")
    page.wait_for_selector("#worksheet-grid")
    _open_item(page, live_server, candidate)
    body = page.inner_text("body")
    assert "Ears, nose and jaw agree." in body and "The ear lobes differ clearly." in body
    assert page.is_enabled("#review-save")
    for row in page.locator("#worksheet-grid tr.feature-row").all():
        row.locator("input[type=radio]").first.check()
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", "Ear lobes agree on the full photos; the crop cut them at an angle.")
    page.check("input[name=bias_acknowledged]")
    journey_shot("settling")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")

    # Then one settler's confirmation is one of the two required: bob's and hers make two, so it is confirmed
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    assert "confirmed" in page.inner_text(".messagelist").lower()

    # And alice sees the match on her case, with both confirming reviewers
    alice_page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    log_in(alice_page, live_server, "alice", password)
    alice_page.goto(f"{live_server.url}/cases/{candidate.case_id}/")
    matches = alice_page.inner_text("table.matches")
    assert "OBAMA-REF" in matches and "bob" in matches and "dana" in matches and "rita" not in matches
    alice_page.context.close()


def test_org_admin_makes_a_caseworker_a_reviewer_and_her_navigation_follows(
    page, browser, journey_shot, live_server, dana, alice, password
):
    # Given alice, a caseworker, who sees no review queue
    alice_page = browser.new_context().new_page()
    log_in(alice_page, live_server, "alice", password)
    assert alice_page.locator("header.top nav a").all_inner_texts() == ["Cases", "API token"]

    # When dana changes alice's role to reviewer on the members page
    log_in(page, live_server, "dana", password)
    membership = Membership.objects.get(user=alice)
    page.goto(f"{live_server.url}/admin/portal/membership/{membership.pk}/change/")
    page.select_option("select[name=role]", "reviewer")
    journey_shot("form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")

    # Then the list shows her new role; the change ended alice's session (a session keeps no standing from a role
    # she no longer has), and once she signs in again her pages carry the reviewer's navigation, not the cases
    row = page.locator("#result_list tbody tr", has_text="alice")
    assert "Reviewer" in row.inner_text()
    assert Membership.objects.get(user=alice).role == "reviewer"
    alice_page.reload()
    assert "/accounts/login/" in alice_page.url
    log_in(alice_page, live_server, "alice", password)
    alice_page.goto(f"{live_server.url}/audits/")
    assert alice_page.locator("header.top nav a").all_inner_texts() == ["Bias audits", "Review & admin", "API token"]
    assert alice_page.goto(f"{live_server.url}{QUEUE}").status == 200
    alice_page.context.close()


@pytest.mark.worker
def test_org_admin_uploads_an_evaluation_set_and_reads_its_audit(
    page, journey_shot, live_server, celery_worker_process, dana, faces, password, tmp_path
):
    import collections
    import csv
    import io
    import zipfile

    # Given a small labelled set: three people with a recorded sex, two photos each, one face in each
    by_person = collections.defaultdict(list)
    for row in faces.rows:
        if row["sex"] and row["faces_found_hog"] == "1" and row["purpose"] == "identity":
            by_person[row["identity"]].append(row)
    people = [rows[:2] for rows in by_person.values() if len(rows) >= 2][:3]
    assert len(people) == 3, "the shared photos hold too few labelled people"
    archive, manifest = tmp_path / "set.zip", tmp_path / "set.csv"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "identity", "sex"])
    with zipfile.ZipFile(archive, "w") as bundle:
        for rows in people:
            for index, row in enumerate(rows):
                name = f"{row['identity']}-{index}.jpg"
                bundle.writestr(name, faces.read(row["file"]))
                writer.writerow([name, row["identity"], row["sex"]])
    manifest.write_text(text.getvalue())

    # When dana uploads it on the bias audits page
    log_in(page, live_server, "dana", password)
    page.goto(f"{live_server.url}/audits/")
    page.fill("input[name=name]", "Six photos")
    page.set_input_files("input[name=archive]", str(archive))
    page.set_input_files("input[name=manifest]", str(manifest))
    page.click("form:has(input[name=archive]) button[type=submit]")

    # Then the set's page follows the worker until every photo is in, and links the audit it ran
    page.wait_for_selector("#batch[data-finished='1']", timeout=180_000)
    assert "6 of 6 rows processed" in page.inner_text("#batch")

    # (the audit runs after the import, so its link appears on a later load of the page)
    def audit_linked() -> bool:
        page.reload()
        return page.locator("#batch a:has-text('audit')").count() > 0

    wait_for(audit_linked, timeout=120, interval=1.0, message="the audit of the set")
    journey_shot("set")

    # And the audit's report states, per group, the rates with their intervals and how many people they rest on
    page.click("#batch a:has-text('audit')")
    # (every group's table sits below the summary, collapsed: too few people here for any to be ranked)
    assert "No group has enough data to be ranked." in page.inner_text("#audit-summary")
    page.click("#single-groups > summary")
    report = page.inner_text("main")
    groups = page.inner_text("#single-groups table")
    assert "sex=F" in groups and "sex=M" in groups and "95% CI" in groups
    # too few people for any figure to count, and it says so, in words a person reads (one identity, not "1 identities")
    assert "insufficient data: 3 identities, fewer than 20" in groups
    assert "1 identity, fewer than 20" in groups and "1 identities" not in report
    journey_shot("report")
