"""The first hour of a new organisation, in headless Chromium: from a fresh `seed_demo` to a confirmed match.

Everything is real: the demo's accounts, training records and gallery come from the command, the photos are
processed by a real worker, the reviewers enrol a second factor as they would with a phone (the code comes from
`demo_totp`, the demo's stand-in for one), and the caseworker reads the result in her own page.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from matching.models import Candidate, Outcome, Photo
from reviews.management.commands.seed_demo import DEMO_PASSWORD, DEMO_PROBE
from tests.browser.conftest import SCREENSHOTS, log_in
from tests.conftest import ALL_SIMILAR, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _totp(username: str) -> str:
    out = io.StringIO()
    call_command("demo_totp", username, stdout=out)
    return out.getvalue().split()[0]


def _review(browser, live_server, username: str, candidate: Candidate, reason: str):
    """A reviewer's own browser: log in, enrol the authenticator, decide the candidate."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    log_in(page, live_server, username, DEMO_PASSWORD)
    # Reviewers must confirm a second factor; the first time, they enrol one.
    page.wait_for_selector("h1:has-text('Two-factor authentication')")
    _shot(page, f"first-hour-{username}-2fa-setup")
    page.fill("input[name=token]", _totp(username))
    page.click("button[type=submit]")
    # and then land on their own start page, not on a caseworker's page they may not open.
    page.wait_for_selector("#site-name, h1:has-text('Site administration')")
    assert "Page not found" not in page.content()

    page.goto(f"{live_server.url}/admin/reviews/reviewitem/")
    page.click(f"a[href='/admin/reviews/reviewitem/{candidate.pk}/change/']")
    page.wait_for_selector(".face-view img")
    assert "You have no recorded facial-comparison training" not in page.content()
    # The demo reviews as a new organisation does: the probe's analysis first, the probe alone on screen ...
    assert page.locator("#face-gallery").count() == 0
    page.check("input[name=analysis_value][value=value]")
    page.click("#review-save")
    page.wait_for_selector("#worksheet-grid")
    # ... then the feature comparison, blind to the score ...
    assert f"{candidate.distance:.3f}" not in page.inner_text("body")
    for name, mark in ALL_SIMILAR.items():
        page.check(f"input[name=feature_{name}][value={mark}]")
    page.click("#review-save")
    # ... and only then the score, the conclusion and the reason.
    page.wait_for_selector("input[name=conclusion]")
    assert f"{candidate.distance:.3f}" in page.inner_text("body")
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", reason)
    page.check("input[name=bias_acknowledged]")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")
    _shot(page, f"first-hour-{username}-decided")
    message = page.inner_text(".messagelist")
    context.close()
    return message


def test_a_fresh_demo_reaches_a_confirmed_match_that_the_caseworker_sees(
    page, browser, live_server, celery_worker_process, faces, settings
):
    settings.REQUIRE_TWO_FACTOR = True

    # Given a fresh demo: two trained reviewers, an org admin, a caseworker, a demo-sized gallery the worker encodes
    # and the threshold its settings page proposes, confirmed
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "bob and rita have current training records, recorded by dana." in out.getvalue()
    assert "dana confirmed the threshold the settings page proposes" in out.getvalue()
    references = Photo.objects.filter(kind="reference")
    wait_for(lambda: all(p.is_finished for p in references.all()), timeout=900, message="the demo gallery")
    assert references.count() > 150
    # a photo whose face the detector misses after the upload is re-encoded says so, and is the only way one fails
    assert set(references.filter(status="failed").values_list("failure_reason", flat=True)) <= {
        "No face was found in this photo."
    }

    # When alice, the caseworker, opens a case with another photo of the first demo subject
    log_in(page, live_server, "alice", DEMO_PASSWORD)
    page.click("text=New case")
    page.fill("input[name=reference]", "FH-1")
    page.fill("input[name=title]", "Missing person, first demo case")
    page.fill("input[name=purpose]", "Locate a missing person (demonstration)")
    page.set_input_files("input[name=photos]", str(faces.path(DEMO_PROBE)))
    page.click("button[type=submit]")
    page.wait_for_selector(".status-done", timeout=90_000)
    wait_for(lambda: page.inner_text("[data-count=pending]") == "1", timeout=30, message="one pending candidate")
    assert "DEMO-001" not in page.content()  # nothing reaches the caseworker before review
    _shot(page, "first-hour-alice-case-pending")
    candidate = Candidate.objects.get(case__reference="FH-1")

    # and the two demo reviewers each confirm it, in their own browsers, with their own second factor
    first = _review(browser, live_server, "bob", candidate, "Hairline, eyebrows, nose and ears agree.")
    assert "is recorded" in first
    assert Candidate.objects.get(pk=candidate.pk).outcome == Outcome.PENDING  # one of the two confirmations
    second = _review(browser, live_server, "rita", candidate, "Nose, mouth and jaw agree; no dissimilar feature.")
    assert "now confirmed" in second

    # Then alice's case page shows the confirmed match with both reviewers, and she was told by e-mail
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    # (the page polls its status and reloads itself when a match is confirmed: a reload of our own here could
    # race it, and the caseworker does not need one)
    page.wait_for_selector("table.matches", timeout=30_000)
    row = page.inner_text("table.matches tbody tr")
    assert "DEMO-001" in row and "Barack Obama" in row
    assert page.inner_text("table.matches td.reviewers").split() == ["bob", "rita"]
    assert page.inner_text("[data-count=confirmed]") == "1"
    _shot(page, "first-hour-alice-confirmed-match")
    # The worker sends the notice through the outbox, once the decision has committed
    wait_for(
        lambda: any(
            "alice@demo.example.org" in text and "A reviewer-confirmed match is available for case FH-1." in text
            for text in celery_worker_process.mails()
        ),
        timeout=60,
        message="alice's notice",
    )
    notices = [text for text in celery_worker_process.mails() if "alice@demo.example.org" in text]
    assert "DEMO-001" not in notices[0] and "Obama" not in notices[0]
