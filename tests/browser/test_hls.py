"""A member watching alone plays the lecture over HLS (hls.js) when WebRTC is not used."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import login_page, stop_client_loop, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.media]


def test_member_plays_the_lecture_with_hls_js(live_server, browser):
    lecture = setup_lecture(live_server)
    occ, api = lecture["occurrence"], lecture["api"]
    site = lecture["sites"][0]
    member = api("POST", "/api/v1/members", json={
        "name": "王建国", "member_no": "DY0001", "org_unit_id": site["org_unit_id"],
        "home_site_id": site["id"], "category": "full"})
    api("POST", "/api/v1/users", json={"username": "wang", "password": "member-pass",
                                       "role": "member", "display_name": "王建国",
                                       "member_id": member["id"]})
    key = api("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]
    base = live_server.url

    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        login_page(page, base, "wang", "member-pass")
        # ?hls=1: the fallback a member gets when WebRTC cannot play, chosen up front.
        page.goto(f"{base}/live/{occ}/watch?hls=1")
        page.wait_for_selector('body[data-player="hls"]', state="attached", timeout=10_000)
        publisher, locations = on_client(obs_publish(base, occ, key))
        wait_state(page, "live", timeout=30_000)
        assert_playing(page)
        # hls.js plays from the playlist, not from a WebRTC stream.
        assert page.evaluate("document.getElementById('live-video').srcObject === null")
        assert page.evaluate("window.livePlayer.pc === null")
        # Latency: the clock against the date of the frame on screen (the segments' dates
        # are when the engine received the frame; the publisher is on this machine).
        samples = []
        for _ in range(5):
            page.wait_for_timeout(1000)
            samples.append(page.evaluate("window.LiveHls.latency()"))
        print(f"HLS latency (clock - EXT-X-PROGRAM-DATE-TIME on screen): {samples} s")
        assert all(s is not None and 0 < s <= 5 for s in samples), samples
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        stop_client_loop(client_loop, thread)
        ctx.close()


def _member(api, site, name: str, number: str, username: str) -> dict:
    member = api("POST", "/api/v1/members", json={
        "name": name, "member_no": number, "org_unit_id": site["org_unit_id"],
        "home_site_id": site["id"], "category": "full"})
    api("POST", "/api/v1/users", json={"username": username, "password": "member-pass",
                                       "role": "member", "display_name": name,
                                       "member_id": member["id"]})
    return member


def test_hls_playback_is_what_counts_a_members_minutes(live_server, browser):
    """王 plays over hls.js: his heartbeats count, the organizer's snapshot shows him and
    his minutes grow. 李 has the same page open but fetches no segment (blocked): his
    page never plays, and a viewer:join of his own is refused (no media session)."""
    from tests.test_scale import Sock

    lecture = setup_lecture(live_server, starts_in_minutes=-1)  # under way
    occ, api = lecture["occurrence"], lecture["api"]
    site = lecture["sites"][0]
    wang = _member(api, site, "王建国", "DY0001", "wang")
    li = _member(api, site, "李卫东", "DY0002", "li")
    key = api("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]
    base = live_server.url

    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    def rows() -> dict[int, dict]:
        return {r["member_id"]: r for r in
                api("GET", f"/api/v1/occurrences/{occ}/attendance")}

    def present(snapshot: dict) -> set[int]:
        return {mid for b in snapshot["sites"] for mid in b["present_ids"]}

    contexts = [browser.new_context() for _ in range(3)]
    wang_page, li_page, organizer = (c.new_page() for c in contexts)
    sock = None
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        login_page(li_page, base, "li", "member-pass")
        li_page.route("**/hls/seg*.ts", lambda route: route.abort())
        li_page.goto(f"{base}/live/{occ}/watch?hls=1")
        login_page(wang_page, base, "wang", "member-pass")
        wang_page.goto(f"{base}/live/{occ}/watch?hls=1")
        wang_page.wait_for_selector('body[data-player="hls"]', state="attached",
                                    timeout=10_000)
        assert_playing(wang_page)
        # His page says it counts (the viewer:join was accepted).
        wait_for_js(wang_page, "() => document.querySelector('.att-viewer-state')"
                    ".textContent === document.querySelector('.att-viewer-state')"
                    ".dataset.watching", timeout=15_000)
        login_page(organizer, base, "admin", "admin-password")
        snapshot_url = f"{base}/attendance/{occ}/snapshot.json"
        snapshot = organizer.request.get(snapshot_url).json()
        assert wang["id"] in present(snapshot), snapshot
        # Minutes grow while he plays (they are counted to a tenth of a minute).
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not rows()[wang["id"]]["minutes"]:
            wang_page.wait_for_timeout(1000)
        counted = rows()
        assert counted[wang["id"]]["minutes"] > 0, counted[wang["id"]]
        assert counted[wang["id"]]["first_join"] is not None
        # 李's page loaded the playlist but fetched no segment: nothing plays, nothing counts.
        assert li_page.evaluate(
            "document.getElementById('live-video').currentTime") == 0
        assert counted[li["id"]]["minutes"] == 0
        assert counted[li["id"]]["first_join"] is None
        assert li["id"] not in present(organizer.request.get(snapshot_url).json())
        sock = Sock(base, live_server.token("li", "member-pass"))
        refused = sock.call("viewer:join", {"occurrence_id": occ,
                                            "event_id": "li-join-without-segments"})
        assert refused["ok"] is False, refused
        assert refused["error"] == "no_media_session", refused
        wang_page.screenshot(path="test-output/hls/member-counted.png")
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        if sock is not None:
            sock.close()
        stop_client_loop(client_loop, thread)
        for c in contexts:
            c.close()
