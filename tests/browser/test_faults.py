"""Faults mid-lecture as people see them: the recordings disk fills up (a real tmpfs)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import login_page
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
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        trainer_ctx.close()
        site_ctx.close()
        client_loop.call_soon_threadsafe(client_loop.stop)
        thread.join(10)
        client_loop.close()
