"""Faults while on air: the disk under the recordings fills up (a real, tiny tmpfs)."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from accounts.service import issue_site_token
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, Subscriber
from tests.video.test_signaling import bearer, stream_key, whep_signal, whip_signal
from video import media

pytestmark = pytest.mark.media


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs: a WebM recording at ~1 Mb/s fills it within a second."""
    path = tmp_path / "tiny"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_while_recording_the_broadcast_goes_on_and_the_live_api_says_so(
        app, client, factory, scene, db_session, tiny_disk):
    app.config["YUANJIAO_RECORDINGS_DIR"] = str(tiny_disk)
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    trainer = factory.headers(scene.trainer)
    db_session.commit()
    seen: dict = {}
    out: dict = {}

    def stats() -> dict:
        return client.get(f"/api/v1/occurrences/{occ}/live", headers=trainer).json["stats"]

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        site = Subscriber()
        await site.start(whep_signal(client, occ, bearer(site_token), seen))
        assert await site.wait_frames(10, 15)
        out["first"] = await in_thread(stats)
        assert await wait_for(lambda: stats().get("recording_state") == "failed", 20)
        out["failed"] = await in_thread(stats)
        frames_at_failure = site.frames
        await asyncio.sleep(3)
        out["frames_after"] = site.frames - frames_at_failure
        out["after"] = await in_thread(stats)
        response = await in_thread(client.delete, seen["whip"], headers=bearer(key))
        assert response.status_code == 200
        for peer in (publisher, site):
            await peer.close()

    run(scenario())
    media.runtime(app).drain()
    assert out["first"]["recording_state"] in ("recording", "failed")
    assert out["failed"]["recording_error"] == "disk_full"
    # The sites keep their picture: 3 s at 30 fps after the disk filled.
    assert out["frames_after"] >= 45, out
    assert out["after"]["fps"] > 10
    recordings = client.get(f"/api/v1/occurrences/{occ}/recordings", headers=trainer).json
    assert [r["status"] for r in recordings] == ["failed"]


NODE_SECRET = "restart-node-secret"


def _start_node(port: int, log_path) -> subprocess.Popen:
    import sys
    import time

    import requests

    from tests.conftest import ROOT

    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "video.node", "--port", str(port),
                                 "--secret", NODE_SECRET], cwd=str(ROOT), stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1,
                            headers={"X-Yuanjiao-Node-Secret": NODE_SECRET}).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    pytest.fail(f"media node did not start (exit {proc.poll()})")


def test_a_restarted_media_node_is_followed_from_its_new_log(app, client, factory, scene,
                                                            db_session, tmp_path):
    """Killed, then restarted on its port (systemd): the web app told the pages the lecture
    was interrupted, and hears the new process's events from its first one on (the new
    broadcast_started, though the new log's numbers are below the old ones)."""
    from tests.conftest import free_port
    from video import service

    port = free_port()
    log_path = tmp_path / "node.log"
    proc = _start_node(port, log_path)
    app.config.update(YUANJIAO_MEDIA_NODES=[f"http://127.0.0.1:{port}"],
                      YUANJIAO_MEDIA_NODE_SECRET=NODE_SECRET)
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    db_session.commit()
    seen: dict = {}
    events: list = []

    def on_started(sender, **kw):
        events.append(("started", sender))

    lost: list = []
    original = media.handle_event

    def spy(event):
        if event.get("type") == "media_lost":
            lost.append(event["occurrence_id"])
        original(event)

    service.broadcast_started.connect(on_started)
    media.handle_event = spy
    procs = [proc]

    async def scenario():
        first = Publisher()
        await first.start(whip_signal(client, occ, bearer(key), seen))
        assert await wait_for(lambda: events.count(("started", occ)) == 1, 20)
        procs[0].kill()
        await in_thread(procs[0].wait, 10)
        assert await wait_for(lambda: lost == [occ], 10), lost
        procs[0] = await in_thread(_start_node, port, log_path)
        await first.close()
        second = Publisher()  # the trainer's page publishes again
        await second.start(whip_signal(client, occ, bearer(key), seen))
        # The new process's broadcast_started (its seq 1, below the old log's last).
        assert await wait_for(lambda: events.count(("started", occ)) == 2, 20), events
        response = await in_thread(client.delete, seen["whip"], headers=bearer(key))
        assert response.status_code == 200
        await second.close()

    try:
        run(scenario())
    finally:
        media.handle_event = original
        service.broadcast_started.disconnect(on_started)
        procs[0].terminate()
        procs[0].wait(15)
