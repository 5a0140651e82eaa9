"""Journeys through the pages, as the people of a lesson use them together.

The trainer broadcasts with Chromium's fake camera; the meeting room's kiosk screen
(1366×768) plays it and shows the QR beside the video; the operator, on a phone viewport,
marks two members on the roll call and the room screen's headcount follows without a
reload; a member's phone follows the QR and checks in; then the operator's phone loses the
network, marks two more, reloads, comes back and finds each mark stored once; a walk-in is
found by name; the trainer stops and his camera is released. Each step saves a screenshot
under test-output/journeys/.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.browser.test_live import assert_playing, ensure_tables, wait_state
from tests.conftest import ROOT, login_page

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.live]

SHOTS = ROOT / "test-output" / "journeys"
PHONE = {"width": 390, "height": 844}
ROOM = {"width": 1366, "height": 768}


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def setup_room(server) -> dict:
    """A branch, its meeting room with a screen token and an operator, four members at
    home there, a trainer, and a lecture that starts in a minute."""
    ensure_tables(server)
    admin = server.token()

    def api(method, path, **kw):
        response = server.api(method, path, admin, **kw)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    committee = api("POST", "/api/v1/org-units", json={"name": "公司党委", "kind": "committee"})
    unit = api("POST", "/api/v1/org-units", json={"name": "机关党支部", "kind": "branch",
                                                  "parent_id": committee["id"]})
    other = api("POST", "/api/v1/org-units", json={"name": "一工区党支部", "kind": "branch",
                                                   "parent_id": committee["id"]})
    guest = api("POST", "/api/v1/members", json={"name": "赵来宾", "member_no": "J0099",
                                                 "org_unit_id": other["id"]})
    site = api("POST", "/api/v1/sites", json={"name": "一号会议室", "org_unit_id": unit["id"]})
    members = [api("POST", "/api/v1/members", json={
        "name": name, "member_no": f"J{n:04d}", "org_unit_id": unit["id"],
        "home_site_id": site["id"]}) for n, name in enumerate(("王建国", "李海燕", "张志强",
                                                               "刘丽华", "陈春梅"), start=1)]
    for username, role, extra in (("lecturer", "trainer", {}),
                                  ("operator", "site_operator", {"site_id": site["id"]}),
                                  ("chen", "member", {"member_id": members[4]["id"]})):
        api("POST", "/api/v1/users", json={"username": username, "password": "journey-pass",
                                           "role": role, "display_name": username, **extra})
    trainer_id = next(u["id"] for u in api("GET", "/api/v1/users?page_size=100")
                      if u["username"] == "lecturer")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=1)
    study = api("POST", "/api/v1/sessions", json={
        "title": "党史讲座", "kind": "party_history_lecture", "trainer_id": trainer_id,
        "starts_at": start.isoformat(), "duration_minutes": 60, "site_ids": [site["id"]],
        "org_unit_ids": [unit["id"]], "video_height": 360, "video_bitrate_kbps": 600})
    occurrence = api("GET", f"/api/v1/sessions/{study['id']}/occurrences")[0]
    token = api("POST", f"/api/v1/sites/{site['id']}/screen-tokens")["token"]
    return {"admin": admin, "occurrence": occurrence["id"], "site": site["id"],
            "members": [m["id"] for m in members], "guest": guest["id"], "token": token,
            "api": api}


def qr_geometry(page) -> dict:
    """The QR's box, whether it lies in the viewport, and what is at its centre."""
    return page.evaluate("""() => {
        const qr = document.querySelector('#checkin-qr');
        const r = qr.getBoundingClientRect();
        const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
        return {tag: qr.tagName.toLowerCase(), x: r.x, y: r.y, width: r.width,
                height: r.height, vw: innerWidth, vh: innerHeight,
                uncovered: !!hit && (hit === qr || qr.contains(hit)),
                scroll: [document.documentElement.scrollWidth,
                         document.documentElement.scrollHeight]};
    }""")


def uncovered(page, selector: str) -> bool:
    """Whether the element at the centre of `selector` is it or inside it."""
    return page.evaluate("""sel => {
        const el = document.querySelector(sel);
        const r = el.getBoundingClientRect();
        const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
        return !!hit && (hit === el || el.contains(hit));
    }""", selector)


def headcount(page) -> tuple[int, int]:
    hc = page.locator("#headcount")
    return int(hc.get_attribute("data-present")), int(hc.get_attribute("data-expected"))


def wait_headcount(page, present: int) -> None:
    page.wait_for_function(
        "n => document.querySelector('#headcount').dataset.present === String(n)",
        arg=present, timeout=20_000)


def test_trainer_room_screen_roll_call_online_and_offline(live_server, browser):
    room = setup_room(live_server)
    base, occ, site = live_server.url, room["occurrence"], room["site"]
    a, b, c, d, e = room["members"]

    # 1. the trainer broadcasts with the fake camera
    trainer_ctx = browser.new_context()
    trainer = trainer_ctx.new_page()
    login_page(trainer, base, "lecturer", "journey-pass")
    trainer.goto(f"{base}/live/{occ}/broadcast")
    trainer.wait_for_function(
        "() => document.getElementById('preview').videoWidth > 0", timeout=15_000)
    trainer.click("#start-broadcast")
    wait_state(trainer, "live")
    # while live, the badge is a corner label: the preview and the controls stay uncovered
    for selector in ("#preview", "#stop-broadcast", "#camera-select"):
        assert uncovered(trainer, selector), selector
    # OBS: one button issues the key and shows it beside the WHIP address
    trainer.click("#obs-key")
    trainer.wait_for_selector(".live-obs-fields:not([hidden])")
    assert len(trainer.input_value("#obs-stream-key")) > 20
    assert trainer.input_value("#obs-whip-url").endswith(f"/whip/{occ}")
    assert trainer.locator('.live-obs [data-copy="#obs-stream-key"]').count() == 1
    shot(trainer, "01-trainer-live")

    # 2. the room's kiosk address (screen token, no login) opens the current lesson
    room_ctx = browser.new_context(viewport=ROOM)
    screen = room_ctx.new_page()
    screen.goto(f"{base}/screen/{site}?token={room['token']}")
    assert f"/live/{occ}/site/{site}" in screen.url
    wait_state(screen, "live")
    assert_playing(screen)
    screen.wait_for_selector("#checkin-qr[data-url]", timeout=20_000)
    geo = qr_geometry(screen)
    assert geo["tag"] in ("img", "svg", "canvas"), geo
    assert geo["width"] >= 200, geo
    assert geo["height"] >= 200, geo
    assert geo["x"] >= 0, geo
    assert geo["y"] >= 0, geo
    assert geo["x"] + geo["width"] <= geo["vw"], geo
    assert geo["y"] + geo["height"] <= geo["vh"], geo
    assert geo["uncovered"], geo
    assert geo["scroll"] == [ROOM["width"], ROOM["height"]], geo  # no scrolling
    # the video is beside the QR, not under it
    video = screen.locator("video#live-video").bounding_box()
    assert video["x"] + video["width"] <= geo["x"], (video, geo)
    assert screen.get_attribute("#offline-banner", "hidden") is not None
    wait_headcount(screen, 0)
    assert headcount(screen) == (0, 5)
    shot(screen, "02-room-screen-live")

    # 3. the operator's phone: roll call, two members, one tap each
    phone_ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = phone_ctx.new_page()
    login_page(phone, base, "operator", "journey-pass")
    phone.goto(f"{base}/live/{occ}/site/{site}/roll-call")
    for member in (a, b, c, d, e):
        phone.wait_for_selector(f'[data-member-id="{member}"] .check-in', timeout=15_000)
        assert phone.locator(f'[data-member-id="{member}"] .check-out').count() == 1
    phone.wait_for_selector('#roll-call[data-offline-ready="true"]', timeout=20_000)
    shot(phone, "03-roll-call-open")
    # a second device of the operator (a tablet) follows the phone's marks live
    tablet_ctx = browser.new_context(viewport={"width": 820, "height": 1180})
    tablet = tablet_ctx.new_page()
    login_page(tablet, base, "operator", "journey-pass")
    tablet.goto(f"{base}/live/{occ}/site/{site}/roll-call")
    tablet.wait_for_selector(f'[data-member-id="{a}"][data-present="false"]', timeout=15_000)
    tablet.wait_for_selector('.rc-conn[data-state="up"]', timeout=15_000)
    for member in (a, b):
        phone.tap(f'[data-member-id="{member}"] .check-in')
        phone.wait_for_selector(f'[data-member-id="{member}"][data-present="true"]')
    for member in (a, b):
        phone.wait_for_selector(f'[data-member-id="{member}"][data-sync="synced"]',
                                timeout=15_000)
    shot(phone, "04-roll-call-two-marked")
    for member in (a, b):
        tablet.wait_for_selector(f'[data-member-id="{member}"][data-present="true"]',
                                 timeout=15_000)
    tablet_ctx.close()
    wait_headcount(screen, 2)
    recent = screen.inner_text(".att-recent")
    assert "王建国" in recent
    assert "李海燕" in recent
    shot(screen, "05-room-screen-headcount-2")

    # a member's phone follows the QR on the room screen and checks in; the roll call sees it
    qr_url = screen.get_attribute("#checkin-qr", "data-url")
    member_ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    member = member_ctx.new_page()
    member.goto(qr_url)
    member.fill("input[name=username]", "chen")
    member.fill("input[name=password]", "journey-pass")
    member.click("button[type=submit]")
    member.wait_for_url(lambda u: "/checkin/" in u)
    member.tap("button.att-confirm")
    member.wait_for_selector(".att-done")
    shot(member, "05b-member-checked-in-by-qr")
    member_ctx.close()
    phone.wait_for_selector(f'[data-member-id="{e}"][data-present="true"]', timeout=15_000)
    wait_headcount(screen, 3)

    # 4. the phone loses the network: marks are queued, survive a reload, then sync
    phone_ctx.set_offline(True)
    for member in (c, d):
        phone.tap(f'[data-member-id="{member}"] .check-in')
        phone.wait_for_selector(f'[data-member-id="{member}"][data-sync="pending"]')
    assert phone.get_attribute(f'[data-member-id="{c}"]', "data-present") == "true"
    shot(phone, "06-roll-call-offline-queued")
    phone.reload()
    for member in (c, d):
        phone.wait_for_selector(
            f'[data-member-id="{member}"][data-sync="pending"][data-present="true"]',
            timeout=15_000)
    assert phone.inner_text(".rc-queue-count") == "2"
    shot(phone, "07-roll-call-reloaded-offline")
    assert headcount(screen) == (3, 5)  # nothing reached the server yet
    phone_ctx.set_offline(False)
    for member in (c, d):
        phone.wait_for_selector(f'[data-member-id="{member}"][data-sync="synced"]',
                                timeout=30_000)
    shot(phone, "08-roll-call-synced")
    wait_headcount(screen, 5)
    shot(screen, "09-room-screen-headcount-5")

    # each mark is stored once, with the event id the phone gave it
    events = live_server.api("GET", f"/api/v1/occurrences/{occ}/attendance-events?page_size=1000",
                             room["admin"]).json()
    check_ins = [ev for ev in events if ev["type"] == "check_in"]
    assert sorted(ev["member_id"] for ev in check_ins) == sorted([a, b, c, d])
    assert [ev["member_id"] for ev in events if ev["type"] == "qr_check_in"] == [e]
    marks = phone.evaluate("window.rollCall.marks()")
    assert sorted(ev["event_id"] for ev in check_ins) == sorted(
        f"{m['event_id']}:{m['member_ids'][0]}" for m in marks)
    queued = [m for m in marks if m["member_ids"][0] in (c, d)]
    assert all(m["queued"] for m in queued), queued
    # the server kept the offline marks' own times (before the sync) and flagged them
    offline = {ev["member_id"]: ev for ev in check_ins if ev["member_id"] in (c, d)}
    for ev in offline.values():
        assert ev["payload"].get("queued") is True, ev
        assert ev["client_time"] is not None
        assert ev["client_time"] < ev["server_time"]
    rows = live_server.api("GET", f"/api/v1/occurrences/{occ}/attendance",
                           room["admin"]).json()
    assert all("离线补传" in r["notes"] for r in rows if r["member_id"] in (c, d))

    # a walk-in: not on the roster, found by name among the organization's members
    guest = room["guest"]
    assert phone.locator(f'[data-member-id="{guest}"]').count() == 0
    phone.fill("#rc-search", "赵来")
    assert phone.locator(f'[data-member-id="{a}"]').is_hidden()  # the search filters
    phone.tap(".rc-find")
    phone.wait_for_selector(f'[data-found-id="{guest}"] .rc-add', timeout=15_000)
    phone.tap(f'[data-found-id="{guest}"] .rc-add')
    phone.wait_for_selector(
        f'[data-member-id="{guest}"].rc-walk-in-row[data-present="true"][data-sync="synced"]',
        timeout=15_000)
    shot(phone, "10-roll-call-walk-in")
    wait_headcount(screen, 6)
    # and one check-out: the room screen follows
    phone.fill("#rc-search", "")
    phone.tap(f'[data-member-id="{a}"] .check-out')
    phone.wait_for_selector(f'[data-member-id="{a}"][data-present="false"][data-sync="synced"]',
                            timeout=15_000)
    wait_headcount(screen, 5)
    recent = screen.inner_text(".att-recent")
    assert "赵来宾" in recent
    assert "王建国" not in recent  # checked out
    shot(screen, "11-room-screen-walk-in")

    trainer.evaluate("window.__tracks = window.liveBroadcast.camera.getTracks()")
    trainer.click("#stop-broadcast")
    wait_state(screen, "ended", timeout=15_000)
    wait_state(trainer, "ended")
    # the camera and microphone are released: no live track is left on the page
    assert trainer.evaluate("window.__tracks.map(t => t.readyState)") == ["ended", "ended"]
    assert trainer.evaluate("window.liveBroadcast.camera") is None
    assert trainer.evaluate("document.getElementById('preview').srcObject") is None
    shot(trainer, "12-trainer-ended")
    for ctx in (phone_ctx, room_ctx, trainer_ctx):
        ctx.close()
    assert Path(SHOTS / "09-room-screen-headcount-5.png").stat().st_size > 0
