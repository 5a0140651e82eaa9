"""The meeting room's kiosk screen at the two screen sizes of the rooms: the QR beside the
video and wholly visible, no scrolling, the waiting state with the start time, the offline
banner pointing to the roll call, and sound remembered per device."""

from __future__ import annotations

import pytest

from bench.attendance import seed
from tests.browser.test_journeys import qr_geometry

pytestmark = [pytest.mark.browser, pytest.mark.live]


@pytest.fixture
def room(tmp_path, live_server_factory):
    cfg = seed(f"sqlite:///{tmp_path / 'live.sqlite3'}", sites=1, members=4, viewers=0,
               admin_password="admin-password")
    server = live_server_factory({"YUANJIAO_AUTO_MIGRATE": "0", "YUANJIAO_MEDIA": "off"})
    occ, site = cfg["occurrence_id"], cfg["site_ids"][0]
    return server, f"{server.url}/live/{occ}/site/{site}?token={cfg['screen_tokens'][0]}"


@pytest.mark.parametrize(("width", "height", "least"), [(1920, 1080, 240), (1366, 768, 200)])
def test_qr_beside_the_video_wholly_visible_without_scrolling(room, browser, width, height,
                                                              least):
    _server, url = room
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#checkin-qr[data-url]", timeout=20_000)
    geo = qr_geometry(page)
    assert geo["width"] >= least, geo
    assert geo["height"] >= least, geo
    assert geo["x"] >= 0, geo
    assert geo["x"] + geo["width"] <= width, geo
    assert geo["y"] >= 0, geo
    assert geo["y"] + geo["height"] <= height, geo
    assert geo["uncovered"], geo
    assert geo["scroll"] == [width, height], geo
    video = page.locator("video#live-video").bounding_box()
    assert video["width"] > width / 2, video
    assert video["x"] + video["width"] <= geo["x"], (video, geo)
    # nothing is live (media off): waiting, with the lesson's start time
    assert page.get_attribute("#live-status", "data-state") == "waiting"
    assert page.locator(".live-status-when").inner_text().strip()
    hc = page.locator("#headcount")
    assert hc.get_attribute("data-expected") == "4"
    assert hc.get_attribute("data-present") == "0"
    ctx.close()


def test_offline_banner_points_to_the_roll_call_and_sound_is_remembered(room, browser):
    _server, url = room
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#checkin-qr[data-url]", timeout=20_000)
    assert page.locator("#offline-banner").is_hidden()

    ctx.set_offline(True)
    page.wait_for_selector("#offline-banner", state="visible", timeout=10_000)
    href = page.get_attribute("#offline-banner a", "href")
    assert href.endswith("/roll-call")
    assert page.get_attribute(".att-roll-call-link", "href") == href
    ctx.set_offline(False)
    page.wait_for_selector("#offline-banner", state="hidden", timeout=30_000)

    # one big button, once per device
    assert page.locator("#unmute").is_visible()
    page.click("#unmute")
    assert page.evaluate("localStorage.getItem('yuanjiao.sound')") == "on"
    assert page.locator("#unmute").is_hidden()
    page.reload()
    page.wait_for_selector("#checkin-qr[data-url]", timeout=20_000)
    assert page.locator("#unmute").is_hidden()
    assert page.evaluate("document.getElementById('live-video').muted") is False
    ctx.close()
