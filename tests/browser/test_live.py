"""The live relay end to end: a trainer's browser, two meeting-room screens, OBS-style WHIP."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path

import pytest
import requests

from tests.conftest import login_page, stop_client_loop, wait_for_js
from tests.video.peers import Publisher

pytestmark = [pytest.mark.browser, pytest.mark.media]


def ensure_tables(server) -> None:
    """Create tables the migrations do not have yet (the lead regenerates them at the end)."""
    from sqlalchemy import create_engine

    import models  # noqa: F401  (every table in the metadata)
    from extensions import db

    engine = create_engine(f"sqlite:///{Path(server.tmp) / 'live.sqlite3'}")
    db.metadata.create_all(engine, checkfirst=True)
    engine.dispose()


def setup_lecture(server, starts_in_minutes: int = 5) -> dict:
    """Org unit, two sites with screen tokens, a trainer, and a lecture aimed at both."""
    ensure_tables(server)
    admin = server.token()

    def api(method, path, **kw):
        response = server.api(method, path, admin, **kw)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    unit = api("POST", "/api/v1/org-units", json={"name": "机关党支部", "kind": "branch"})
    sites = [api("POST", "/api/v1/sites", json={"name": name, "org_unit_id": unit["id"]})
             for name in ("一号会议室", "二号会议室")]
    api("POST", "/api/v1/users", json={"username": "lecturer", "password": "podium-pass-2026",
                                       "role": "trainer", "display_name": "主讲人"})
    trainer_id = next(u["id"] for u in api("GET", "/api/v1/users?page_size=100")
                      if u["username"] == "lecturer")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
        minutes=starts_in_minutes)
    study = api("POST", "/api/v1/sessions", json={
        "title": "党史讲座", "kind": "party_history_lecture", "trainer_id": trainer_id,
        "starts_at": start.isoformat(), "duration_minutes": 60,
        "site_ids": [s["id"] for s in sites], "video_height": 360,
        "video_bitrate_kbps": 800})
    occurrence = api("GET", f"/api/v1/sessions/{study['id']}/occurrences")[0]
    tokens = [api("POST", f"/api/v1/sites/{s['id']}/screen-tokens")["token"] for s in sites]
    return {"admin": admin, "occurrence": occurrence["id"], "sites": sites, "tokens": tokens,
            "api": api}


def wait_state(page, state: str, timeout: float = 20_000) -> None:
    page.wait_for_selector(f'#live-status[data-state="{state}"]', timeout=timeout,
                           state="attached")


def assert_playing(page) -> None:
    """The site's video has a picture and its time advances."""
    wait_for_js(page,
        "() => { const v = document.querySelector('video#live-video');"
        " return v && v.videoWidth > 0 && v.currentTime > 0.3; }", timeout=20_000)
    first = page.evaluate("document.querySelector('video#live-video').currentTime")
    page.wait_for_timeout(1200)
    later = page.evaluate("document.querySelector('video#live-video').currentTime")
    assert later > first + 0.5, (first, later)


def test_trainer_broadcasts_to_two_sites_obs_publishes_and_recording_plays(
        live_server, browser):
    lecture = setup_lecture(live_server)
    occ = lecture["occurrence"]
    base = live_server.url

    trainer_ctx = browser.new_context()
    trainer = trainer_ctx.new_page()
    login_page(trainer, base, "lecturer", "podium-pass-2026")
    trainer.goto(f"{base}/live/{occ}/broadcast")
    wait_state(trainer, "waiting")
    wait_for_js(trainer,
        "() => document.getElementById('preview').videoWidth > 0", timeout=15_000)
    # Screen sharing is not available headless: the page must say so and keep working.
    trainer.click("#share-screen")

    screens = []
    for site, token in zip(lecture["sites"], lecture["tokens"], strict=True):
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(f"{base}/live/{occ}/site/{site['id']}?token={token}")
        wait_state(page, "waiting")
        screens.append((ctx, page))

    trainer.click("#start-broadcast")
    wait_state(trainer, "live")
    for _ctx, page in screens:
        wait_state(page, "live")
        assert_playing(page)
    wait_for_js(trainer,
        "() => document.getElementById('stat-sites').textContent === '2'", timeout=15_000)
    live = live_server.api("GET", f"/api/v1/occurrences/{occ}/live", lecture["admin"]).json()
    assert live["state"] == "live"
    assert sorted(s["site_name"] for s in live["sites"]) == ["一号会议室", "二号会议室"]

    trainer.click("#stop-broadcast")
    wait_state(trainer, "ended")
    for _ctx, page in screens:
        wait_state(page, "ended", timeout=15_000)

    # OBS-style: a plain aiortc client publishes over WHIP with a stream key.
    key = lecture["api"]("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]

    # Playwright's sync API owns this thread's loop: the aiortc client gets a thread of its own.
    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        page = screens[0][1]
        wait_state(page, "live")
        assert_playing(page)
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        stop_client_loop(client_loop, thread)
    wait_state(screens[0][1], "ended", timeout=15_000)

    # Both broadcasts were recorded; the first plays back in the browser.
    recordings = []
    for _ in range(50):
        recordings = live_server.api("GET", f"/api/v1/occurrences/{occ}/recordings",
                                     lecture["admin"]).json()
        if len(recordings) == 2 and all(r["status"] == "complete" for r in recordings):
            break
        trainer.wait_for_timeout(200)
    assert [r["status"] for r in recordings] == ["complete", "complete"]
    files = list(Path(live_server.tmp, "recordings").rglob("*.webm"))
    assert len(files) == 2
    assert all(f.stat().st_size > 10_000 for f in files)
    state = trainer.evaluate("""async (url) => {
        const v = document.createElement('video');
        v.muted = true; v.preload = 'auto'; v.src = url;
        document.body.appendChild(v);
        await new Promise((ok, fail) => { v.onloadeddata = ok; v.onerror = () => fail(v.error);
                                          setTimeout(ok, 10000); });
        return {readyState: v.readyState, duration: v.duration, width: v.videoWidth};
    }""", recordings[0]["url"])
    assert state["readyState"] >= 2, state
    assert state["duration"] > 0, state
    assert state["width"] > 0, state
    for ctx, _page in screens:
        ctx.close()
    trainer_ctx.close()


async def obs_publish(base: str, occ: int, key: str):
    """Publish synthetic video over WHIP as OBS would; returns (publisher, locations)."""
    publisher = Publisher()
    locations: dict = {}

    async def signal(sdp):
        response = await asyncio.get_running_loop().run_in_executor(None, lambda: (
            requests.post(f"{base}/whip/{occ}", data=sdp, timeout=30, headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {key}"})))
        assert response.status_code == 201, response.text
        locations["whip"] = response.headers["Location"]
        return response.text, response.headers["Location"]

    await publisher.start(signal)
    return publisher, locations
