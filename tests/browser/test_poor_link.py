"""A room on the audio-only layer (a link too poor for video): the room screen says the
picture is paused because of the link, and clears it once video comes back."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.media]


def test_room_screen_says_when_its_link_carries_only_audio(live_server, browser, tmp_path):
    lecture = setup_lecture(live_server)
    occ, base = lecture["occurrence"], live_server.url
    site, token = lecture["sites"][0], lecture["tokens"][0]
    admin = {"Authorization": f"Bearer {lecture['admin']}"}
    key = lecture["api"]("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        page = ctx.new_page()
        page.goto(f"{base}/live/{occ}/site/{site['id']}?token={token}")
        wait_state(page, "live")
        assert_playing(page)
        assert page.locator("#link-notice").is_hidden()
        sites = requests.get(f"{base}/api/v1/occurrences/{occ}/live", headers=admin,
                             timeout=10).json()["sites"]
        rid = next(s["resource_id"] for s in sites if s.get("site_id") == site["id"])
        layer = f"{base}/api/v1/occurrences/{occ}/live/sites/{rid}/layer"
        # the link is judged too poor for video: the relay sends this room audio only
        requests.put(layer, json={"layer": "audio"}, headers=admin,
                     timeout=10).raise_for_status()
        page.wait_for_selector("#link-notice", state="visible", timeout=20_000)
        page.screenshot(path="test-output/journeys/30-room-screen-poor-link.png")
        # and better again: the picture resumes and the notice goes by itself
        requests.put(layer, json={"layer": "high"}, headers=admin,
                     timeout=10).raise_for_status()
        page.wait_for_selector("#link-notice", state="hidden", timeout=20_000)
        wait_for_js(page, "() => document.body.dataset.videoPaused === 'false'",
                    timeout=10_000)
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        ctx.close()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
