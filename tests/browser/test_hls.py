"""A member watching alone plays the lecture over HLS (hls.js) when WebRTC is not used."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import login_page

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
        client_loop.call_soon_threadsafe(client_loop.stop)
        thread.join(10)
        client_loop.close()
        ctx.close()
