"""Faults mid-lecture as people see them: the recordings disk fills up (a real tmpfs)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import login_page, stop_client_loop
from tests.video.test_faults import tiny_disk  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.media]


def test_disk_full_the_trainer_is_told_and_the_sites_keep_playing(
        live_server_factory, browser, tiny_disk):  # noqa: F811
    server = live_server_factory({"YUANJIAO_MEDIA": "inprocess",
                                  "YUANJIAO_RECORDINGS_DIR": str(tiny_disk)})
    lecture = setup_lecture(server)
    occ, base = lecture["occurrence"], server.url
    key = lecture["api"]("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]

    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    trainer_ctx, site_ctx = browser.new_context(), browser.new_context()
    try:
        trainer = trainer_ctx.new_page()
        login_page(trainer, base, "lecturer", "podium-pass-2026")
        trainer.goto(f"{base}/live/{occ}/broadcast")
        site = site_ctx.new_page()
        site.goto(f"{base}/live/{occ}/site/{lecture['sites'][0]['id']}"
                  f"?token={lecture['tokens'][0]}")
        publisher, locations = on_client(obs_publish(base, occ, key))
        wait_state(site, "live", timeout=30_000)
        assert_playing(site)
        # The disk fills within a second; the trainer's page says so at once (pushed).
        trainer.wait_for_selector("#recording-notice:not([hidden])", timeout=20_000)
        assert trainer.get_attribute("#recording-notice", "data-error") == "disk_full"
        assert "磁盘已满" in trainer.inner_text("#recording-notice")
        live = server.api("GET", f"/api/v1/occurrences/{occ}/live", lecture["admin"]).json()
        assert live["state"] == "live"
        assert live["stats"]["recording_state"] == "failed"
        assert live["stats"]["recording_error"] == "disk_full"
        assert_playing(site)  # the broadcast goes on
        trainer.screenshot(path="test-output/faults/disk-full-trainer.png", full_page=True)
        # The organizer's attendance dashboard says so too.
        organizer = trainer_ctx.browser.new_context()
        try:
            dashboard = organizer.new_page()
            login_page(dashboard, base, "admin", "admin-password")
            dashboard.goto(f"{base}/attendance/{occ}")
            dashboard.wait_for_selector(".att-recording-notice:not([hidden])", timeout=20_000)
            assert dashboard.get_attribute(".att-recording-notice", "data-error") == "disk_full"
            dashboard.screenshot(path="test-output/faults/disk-full-dashboard.png")
        finally:
            organizer.close()
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        trainer_ctx.close()
        site_ctx.close()
        stop_client_loop(client_loop, thread)


NODE_SECRET = "fault-node-secret"


@pytest.fixture
def two_nodes(tmp_path):
    """Two media nodes of this test's own: [(url, process)]."""
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, free_port

    nodes = []
    for i in range(2):
        port = free_port()
        with (tmp_path / f"node{i}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "video.node", "--port", str(port),
                                     "--secret", NODE_SECRET], cwd=str(ROOT), stdout=log,
                                    stderr=subprocess.STDOUT)
        nodes.append((f"http://127.0.0.1:{port}", proc))
    for url, proc in nodes:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/health", headers={"X-Yuanjiao-Node-Secret":
                                                          NODE_SECRET}, timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail(f"media node {url} did not start (exit {proc.poll()})")
    yield nodes
    for _url, proc in nodes:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def test_media_node_killed_mid_lecture_its_sites_play_again_within_5_s(
        live_server_factory, browser, two_nodes):
    import time

    from tests.conftest import wait_for_js

    server = live_server_factory({
        "YUANJIAO_MEDIA_NODES": ",".join(url for url, _ in two_nodes),
        "YUANJIAO_MEDIA_NODE_SECRET": NODE_SECRET})
    lecture = setup_lecture(server)
    occ, base = lecture["occurrence"], server.url
    contexts = [browser.new_context() for _ in range(3)]
    try:
        trainer = contexts[0].new_page()
        login_page(trainer, base, "lecturer", "podium-pass-2026")
        trainer.goto(f"{base}/live/{occ}/broadcast")
        wait_for_js(trainer, "() => document.getElementById('preview').videoWidth > 0",
                    timeout=15_000)
        trainer.click("#start-broadcast")
        wait_state(trainer, "live")
        sites = []
        for ctx, site, token in zip(contexts[1:], lecture["sites"], lecture["tokens"],
                                    strict=True):
            page = ctx.new_page()
            page.goto(f"{base}/live/{occ}/site/{site['id']}?token={token}")
            wait_state(page, "live", timeout=30_000)
            assert_playing(page)
            sites.append(page)
        # The node the lecture runs on.
        hosting = [(url, proc) for url, proc in two_nodes
                   if requests.get(f"{url}/stats/{occ}", timeout=5, headers={
                       "X-Yuanjiao-Node-Secret": NODE_SECRET}).json().get("state") == "live"]
        assert len(hosting) == 1, hosting
        for page in sites:
            page.evaluate("window.__before = window.livePlayer.pc")
        hosting[0][1].kill()
        killed = time.monotonic()
        # Each site page plays again: a new connection, connected, with a picture moving.
        back = []
        for page in sites:
            page.wait_for_function(
                "() => { const pc = window.livePlayer.pc; const v = document.getElementById("
                "'live-video'); return pc && pc !== window.__before && pc.connectionState === "
                "'connected' && v.videoWidth > 0 && v.currentTime > 0.2 && !v.paused; }",
                timeout=30_000)
            back.append(time.monotonic() - killed)
        for page in sites:
            assert_playing(page)
        survivor = next(url for url, proc in two_nodes if proc is not hosting[0][1])
        stats = requests.get(f"{survivor}/stats/{occ}", timeout=5, headers={
            "X-Yuanjiao-Node-Secret": NODE_SECRET}).json()
        print(f"media node killed: sites play again from the other node after "
              f"{', '.join(f'{s:.1f}' for s in back)} s")
        assert stats["state"] == "live"
        assert max(back) <= 5, back
        trainer.screenshot(path="test-output/faults/node-killed-trainer.png", full_page=True)
        sites[0].screenshot(path="test-output/faults/node-killed-site.png")
        trainer.click("#stop-broadcast")
    finally:
        for ctx in contexts:
            ctx.close()
