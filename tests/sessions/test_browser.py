"""The session form in a real browser: recurrence picker, live preview, conflict feedback,
saving, moving an occurrence, and feed links (demo data seeded by the real server)."""

from __future__ import annotations

import pytest

from tests.conftest import login_page, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_session_form_preview_conflict_and_move(live_server_factory, browser):
    server = live_server_factory({"YUANJIAO_DEMO": "1", "YUANJIAO_MEDIA": "off"})
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login_page(page, server.url, "organizer", "yuanjiao-demo")
    assert "党史学习讲座" in page.content() or "/sessions" in page.content()

    page.goto(server.url + "/sessions/new")
    page.fill("input[name=title]", "支部书记讲党课")
    page.select_option("#repeat", "weekly")
    for box in page.locator("input[name=weekdays]").all():
        box.uncheck()
    page.check("input[name=weekdays][value=WE]")
    page.fill("input[name=start_time]", "19:45")
    page.check("input[name=site_ids] >> nth=0")
    # The demo's weekly lecture is on Wednesdays 19:30-21:00 in every room: a clash.
    page.wait_for_selector("#preview-conflicts .conflict", timeout=10000)
    assert "党史学习讲座" in page.inner_text("#preview-conflicts")
    assert page.locator("#preview-list li").count() >= 5
    # Move to Thursdays: the clash disappears from the preview.
    page.uncheck("input[name=weekdays][value=WE]")
    page.check("input[name=weekdays][value=TH]")
    wait_for_js(page,
        "document.querySelectorAll('#preview-conflicts .conflict').length === 0", timeout=10000)
    page.select_option("select[name=end]", "count")
    page.fill("input[name=count]", "3")
    page.click("#save")
    page.wait_for_url("**/sessions/*")
    assert page.locator("#occurrences tbody tr").count() == 3
    assert "FREQ=WEEKLY;BYDAY=TH;COUNT=3" in page.content()

    # Move the second occurrence one day later through the page's button.
    row = page.locator("#occurrences tbody tr").nth(1)
    occ_id = row.get_attribute("data-occurrence-id")
    row.locator("details.row-menu > summary").click()  # the row's other actions
    value = row.locator(".move-input").input_value()
    day = int(value[8:10])
    new_value = value[:8] + f"{day + 1:02d}" + value[10:] if day < 28 else value[:11] + "08:00"
    row.locator(".move-input").fill(new_value)
    row.locator("button.move").click()
    page.wait_for_selector(f"tr[data-occurrence-id='{occ_id}'] .badge.warn", timeout=10000)

    page.goto(server.url + "/feeds")
    assert page.locator("button[data-copy]").count() >= 4
    assert not errors, errors
