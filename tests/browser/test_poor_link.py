"""A room on the audio-only layer (a link too poor for video): the room screen says the
picture is paused because of the link, and clears it once video comes back."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import stop_client_loop, wait_for_js

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
        stop_client_loop(loop, runner)


def test_organizer_dashboard_shows_each_sites_layer_and_link_and_pins_one(live_server, browser):
    """The organizer's attendance dashboard lists each connected site's layer (高清/流畅/
    仅声音), loss and round trip; he pins one site to 流畅 from there, and back to automatic."""
    from tests.conftest import login_page
    from tests.video.peers import Subscriber

    lecture = setup_lecture(live_server)
    occ, base = lecture["occurrence"], live_server.url
    api = lecture["api"]
    api("POST", "/api/v1/users", json={
        "username": "branch-organizer", "password": "organizer-pass-2026", "role": "organizer",
        "display_name": "支部组织员", "org_unit_id": lecture["sites"][0]["org_unit_id"]})
    key = api("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    def whep(token, site_id):
        async def signal(sdp):
            response = await asyncio.get_running_loop().run_in_executor(None, lambda: (
                requests.post(f"{base}/whep/{occ}?site={site_id}", data=sdp, timeout=30,
                              headers={"Content-Type": "application/sdp",
                                       "Authorization": f"Bearer {token}"})))
            assert response.status_code == 201, response.text
            return response.text, response.headers["Location"].rsplit("/", 1)[-1]
        return signal

    async def watch(token, site_id):
        sub = Subscriber(audio=True)
        await sub.start(whep(token, site_id))
        assert await sub.wait_frames(5, 20)
        return sub

    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    subs = []
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        for site, token in zip(lecture["sites"], lecture["tokens"], strict=True):
            subs.append(on_client(watch(token, site["id"])))
        page = ctx.new_page()
        login_page(page, base, "branch-organizer", "organizer-pass-2026")
        page.goto(f"{base}/attendance/{occ}")
        page.wait_for_selector("#live-links tbody tr:nth-child(2)", timeout=20_000)
        rows = page.locator("#live-links tbody tr")
        assert rows.count() == 2
        names = rows.locator("td:first-child").all_inner_texts()
        assert sorted(names) == sorted(s["name"] for s in lecture["sites"])
        # both on the top layer; loss and round trip arrive with their receiver reports
        assert rows.locator("td.live-link-layer").all_inner_texts() == ["高清", "高清"]
        wait_for_js(page, "() => [...document.querySelectorAll('#live-links td.live-link-rtt')]"
                    ".every(td => / ms$/.test(td.textContent))", timeout=20_000)
        assert all(t.endswith("%") for t in rows.locator("td.live-link-loss").all_inner_texts())

        # pin the first site to 流畅: the relay moves it at the low layer's next keyframe
        first = page.locator("#live-links tbody tr", has_text=lecture["sites"][0]["name"])
        first.locator("select.live-pin").select_option("low")
        page.wait_for_selector("#live-links .live-links-message:has-text('已指定画质')")
        wait_for_js(page, "() => { const tr = [...document.querySelectorAll("
                    "'#live-links tbody tr')].find(r => r.children[0].textContent === "
                    f"{lecture['sites'][0]['name']!r}); return tr && tr.dataset.layer === 'low'"
                    " && tr.dataset.pinned === 'low'; }", timeout=20_000)
        assert "流畅" in first.locator("td.live-link-layer").inner_text()
        other = page.locator("#live-links tbody tr", has_text=lecture["sites"][1]["name"])
        assert other.locator("td.live-link-layer").inner_text() == "高清"
        live = requests.get(f"{base}/api/v1/occurrences/{occ}/live", timeout=10, headers={
            "Authorization": f"Bearer {lecture['admin']}"}).json()
        pinned = {s["site_id"]: (s["layer"], s["pinned"]) for s in live["sites"]}
        assert pinned[lecture["sites"][0]["id"]] == ("low", "low")
        assert pinned[lecture["sites"][1]["id"]] == ("high", None)
        assert on_client(subs[0].wait_frames(subs[0].frames + 10, 20))
        assert any(h < 360 for _, h in subs[0].sizes), subs[0].sizes
        page.screenshot(path="test-output/journeys/31-dashboard-video-links.png", full_page=True)

        # back to automatic
        first.locator("select.live-pin").select_option("")
        page.wait_for_selector("#live-links .live-links-message:has-text('已恢复自动')")
        wait_for_js(page, "() => [...document.querySelectorAll('#live-links tbody tr')]"
                    ".every(tr => tr.dataset.pinned === '')", timeout=20_000)
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        page.wait_for_selector("#live-links .live-links-table", state="hidden", timeout=20_000)
        on_client(publisher.close())
    finally:
        for sub in subs:
            on_client(sub.close())
        ctx.close()
        stop_client_loop(loop, runner)
