"""The audit report page in headless Chromium: a summary first (the advice, the worst groups and the plot), every
group's table below it, collapsed."""

from __future__ import annotations

import pytest

from matching.accuracy.evaluation import audit_run_document
from tests.browser.conftest import SCREENSHOTS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1280, "height": 900}


def test_the_audit_report_opens_with_its_summary_and_keeps_every_table_below_collapsed(
    browser, live_server, audit_run, bob, password
):
    # Given the audit of the shared photos, and the groups it measured with enough data, worst first
    document = audit_run_document(audit_run)
    at = audit_run.threshold_in_use

    def fmr(group) -> float | None:
        rate = next((r for r in group["rates"] if abs(r["threshold"] - at) < 1e-9), None)
        return rate and rate["fmr"]

    measured = [g for g in document["groups"] if g["key"] != "all" and not g["insufficient"] and fmr(g) is not None]
    worst = sorted(measured, key=lambda g: -fmr(g))[:5]
    intersections = [g for g in document["groups"] if "&" in g["key"]]
    assert len(worst) == 5 and intersections

    # When a reviewer opens its report
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    log_in(page, live_server, "bob", password)
    page.goto(f"{live_server.url}/audits/runs/{audit_run.pk}/")

    # Then the first card is the summary: the advice, the worst groups and the plot
    assert page.locator("main section.card").first.get_attribute("id") == "audit-summary"
    summary = page.locator("#audit-summary")
    assert "Pairwise advice" in summary.locator("#advice").inner_text()
    rows = summary.locator("#worst-groups tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == [g["key"] for g in worst]
    assert summary.locator("svg").count() == 1
    # and the advice and the worst groups are on the first screen, without scrolling
    for part in ("#advice", "#worst-groups"):
        box = page.locator(part).bounding_box()
        assert box["y"] + box["height"] <= VIEWPORT["height"], part
    # and the tables of every group are below it, collapsed
    for details in ("#disparity", "#single-groups", "#intersections"):
        assert page.locator(details).get_attribute("open") is None, details
    assert not page.locator("#intersections table").is_visible()
    height = page.evaluate("document.documentElement.scrollHeight")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "audit-report-summary.png"), full_page=True)
    print(f"audit report: {height} px tall at {VIEWPORT['width']} px wide, tables collapsed")
    assert height < 3000, height

    # When the reviewer opens the intersections
    page.click("#intersections > summary")

    # Then every intersection is listed
    assert page.locator("#intersections table").is_visible()
    assert page.locator("#intersections tbody tr").count() == len(intersections)
    page.screenshot(path=str(SCREENSHOTS / "audit-report-intersections-open.png"), full_page=True)
    context.close()
