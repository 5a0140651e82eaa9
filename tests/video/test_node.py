"""The web app against a real `python -m video.node` subprocess over HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
import requests

from accounts.service import issue_site_token
from tests.conftest import ROOT, free_port
from tests.video.conftest import run
from tests.video.peers import Publisher, Subscriber
from tests.video.test_signaling import SDP, bearer, stream_key, whep_signal, whip_signal
from video import media, service

pytestmark = pytest.mark.media
SECRET = "node-test-secret"


@pytest.fixture
def node(tmp_path):
    port = free_port()
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "video.node", "--port", str(port),
                             "--secret", SECRET], cwd=str(ROOT), stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", headers={"X-Yuanjiao-Node-Secret": SECRET},
                            timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(15)
    log.close()


@pytest.fixture
def app_config(app_config, node):
    app_config["YUANJIAO_MEDIA_NODES"] = [node]
    app_config["YUANJIAO_MEDIA_NODE_SECRET"] = SECRET
    return app_config


def test_node_refuses_without_secret(node):
    assert requests.get(node + "/stats/1", timeout=5).status_code == 401


def test_publish_and_watch_through_a_media_node(app, client, factory, scene, db_session):
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    db_session.commit()
    seen: dict = {}
    site_auth = {"Authorization": f"Bearer {site_token}"}

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        site = Subscriber()
        await site.start(whep_signal(client, occ, bearer(site_token), seen))
        assert await site.wait_frames(30, 10)
        live = client.get(f"/api/v1/occurrences/{occ}/live", headers=site_auth).json
        assert live["state"] == "live"
        assert live["stats"]["subscribers"] == 1
        assert seen["whep"][0].startswith(f"/whep/{occ}/n0.")
        await asyncio.sleep(1)
        assert client.delete(seen["whip"], headers=bearer(key)).status_code == 200
        await asyncio.wait_for(site.ended.wait(), 5)
        for peer in (publisher, site):
            await peer.close()

    run(scenario())

    def completed():
        media.runtime(app).drain(1)
        db_session.expire_all()
        return service.recording_for_occurrence(db_session, occ) is not None

    deadline = time.monotonic() + 15
    while not completed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert completed()
    assert client.get(f"/api/v1/occurrences/{occ}/live", headers=site_auth).json["state"] \
        == "ended"
    offer = client.post(f"/whep/{occ}", data="v=0\r\nbroken", headers={**site_auth, **SDP})
    assert offer.status_code == 400


def test_etag_and_trickle_ice_through_a_media_node(client, factory, scene, db_session):
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    db_session.commit()
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}

    async def scenario():
        publisher = Publisher(audio=False, width=320, height=240)
        seen: dict = {}

        async def signal(sdp):
            response = client.post(f"/whip/{occ}", data=sdp, headers=bearer(key))
            seen["response"] = response
            return response.get_data(as_text=True), response.headers["Location"]

        await publisher.start(signal)
        location, etag = seen["response"].headers["Location"], seen["response"].headers["ETag"]
        ufrag = publisher.pc.localDescription.sdp.split("a=ice-ufrag:")[1].split()[0]
        body = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:x\r\na=mid:0\r\n"
                "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n")
        out = [client.patch(location, data=body, headers={**bearer(key), **frag,
                                                          "If-Match": tag})
               for tag in (etag, '"stale"', "*")]
        await publisher.close()
        return etag, out

    etag, (ok, stale, restart) = run(scenario())
    assert etag.startswith('"')
    assert ok.status_code == 204, ok.get_data(as_text=True)
    assert ok.headers["ETag"] == etag
    assert stale.status_code == 412
    assert restart.status_code == 422


def test_pinning_a_layer_through_a_media_node(client, factory, scene, db_session):
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    admin = factory.headers(factory.user("admin"))
    db_session.commit()
    seen: dict = {}

    async def scenario():
        publisher = Publisher(audio=False, width=320, height=240)
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        site = Subscriber(audio=False)
        await site.start(whep_signal(client, occ, bearer(site_token), seen))
        assert await site.wait_frames(10, 10)
        rid = seen["whep"][0].rsplit("/", 1)[1]
        assert rid.startswith("n0.")
        url = f"/api/v1/occurrences/{occ}/live/sites/{rid}/layer"
        r = client.put(url, json={"layer": "low"}, headers=admin)
        assert (r.status_code, r.json) == (200, {"layer": "low"})
        sites = client.get(f"/api/v1/occurrences/{occ}/live", headers=admin).json["sites"]
        assert next(s for s in sites if s["resource_id"] == rid)["pinned"] == "low"
        gone = client.put(f"/api/v1/occurrences/{occ}/live/sites/n0.ffff/layer",
                          json={"layer": "low"}, headers=admin)
        assert gone.status_code == 404
        for peer in (publisher, site):
            await peer.close()

    run(scenario())


def test_the_event_log_answers_a_caller_of_another_process_at_once():
    """A web app that followed a node before its restart names the old log (its boot, its
    last number): the new process answers at once instead of holding the long poll, so
    the new broadcast_started reaches the app without a 20 s wait."""
    from video.node import EventLog

    log = EventLog()
    log.append({"type": "broadcast_started", "occurrence_id": 1})
    started = time.monotonic()
    assert log.since(7, 5.0, "an-old-boot") == ([], 1)
    assert log.since(7, 5.0) == ([], 1)  # past this log's end: another process's numbers
    assert time.monotonic() - started < 1.0
    assert log.since(0, 5.0, log.boot) == ([{"type": "broadcast_started",
                                             "occurrence_id": 1}], 1)
    started = time.monotonic()
    assert log.since(1, 0.3, log.boot) == ([], 1)  # its own log: the long poll waits
    assert time.monotonic() - started >= 0.25
