"""工作台 on a 390 px phone, as a site operator and an organizer open it: the header is two
lines (the navigation one scrollable line), the page never scrolls sideways, and each
lesson's main action (the room screen, the roll call) lies on the screen."""

from __future__ import annotations

import pytest

from tests.browser.test_journeys import SHOTS
from tests.conftest import login_page

pytestmark = [pytest.mark.browser, pytest.mark.live]

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def demo_server(live_server_factory):
    return live_server_factory({"YUANJIAO_DEMO": "1", "YUANJIAO_MEDIA": "off"})


@pytest.mark.parametrize("username", ["site1", "organizer"])
def test_workbench_fits_a_phone(demo_server, browser, username):
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    login_page(page, demo_server.url, username, "yuanjiao-demo")
    page.goto(demo_server.url + "/")
    page.wait_for_selector("table.occurrences td.actions .button.primary")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"40-phone-workbench-{username}.png"))

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    header = page.locator("header.topbar").bounding_box()
    assert header["height"] <= 100, header
    nav = page.locator("header.topbar nav").bounding_box()
    link = page.locator("header.topbar nav a").first.bounding_box()
    assert nav["height"] < 2 * link["height"] + 8, (nav, link)   # one line, never three

    for box in (page.locator("table.occurrences td.actions .button.primary").first
                .bounding_box(),
                page.locator("table.occurrences td.actions .button").nth(1).bounding_box()):
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= PHONE["width"], box
        assert box["height"] >= 32, box   # a thumb's target
    ctx.close()
