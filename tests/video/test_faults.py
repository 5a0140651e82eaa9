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
