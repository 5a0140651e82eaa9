"""WHIP, WHEP, stream keys, the live API and recordings through the Flask test client."""

from __future__ import annotations

import asyncio

import av
import pytest

from accounts.service import issue_site_token
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, Subscriber
from video import media, service
from video.models import Recording

SDP = {"Content-Type": "application/sdp"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **SDP}


def stream_key(client, occurrence_id: int, headers: dict) -> str:
    response = client.post(f"/api/v1/occurrences/{occurrence_id}/stream-key", headers=headers)
    assert response.status_code == 201, response.json
    assert response.json["whip_url"].endswith(f"/whip/{occurrence_id}")
    return response.json["stream_key"]


def whip_signal(client, occurrence_id, headers, seen):
    async def signal(sdp):
        response = await in_thread(client.post, f"/whip/{occurrence_id}", data=sdp,
                                   headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert response.mimetype == "application/sdp"
        seen["whip"] = response.headers["Location"]
        return response.get_data(as_text=True), response.headers["Location"]
    return signal


def whep_signal(client, occurrence_id, headers, seen):
    async def signal(sdp):
        response = await in_thread(client.post, f"/whep/{occurrence_id}", data=sdp,
                                   headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        seen.setdefault("whep", []).append(response.headers["Location"])
        return response.get_data(as_text=True), response.headers["Location"]
    return signal


def test_whip_refusals(client, factory, scene):
    occ = scene.occurrence.id
    trainer_headers = factory.headers(scene.trainer)
    assert client.post(f"/whip/{occ}", data="v=0", headers={
        "Authorization": trainer_headers["Authorization"], "Content-Type": "text/plain",
    }).status_code == 415
    missing = client.post(f"/whip/{occ}", data="v=0\r\n", headers=SDP)
    assert missing.status_code == 401
    assert client.post(f"/whip/{occ}", data="v=0\r\n",
                       headers=bearer("sk_wrong")).status_code == 401
    bad = client.post(f"/whip/{occ}", data="not sdp", headers={**trainer_headers, **SDP})
    assert bad.status_code == 400
    assert bad.json["error"] == "bad_sdp"
    assert bad.json["message"]
    # A member's or another trainer's token is valid but not allowed to publish here.
    other_trainer = factory.user("trainer")
    assert client.post(f"/whip/{occ}", data="v=0\r\n",
                       headers={**factory.headers(other_trainer), **SDP}).status_code == 403
    # Another occurrence's stream key is foreign here.
    foreign = stream_key(client, scene.other_occurrence.id, trainer_headers)
    refused = client.post(f"/whip/{occ}", data="v=0\r\n", headers=bearer(foreign))
    assert refused.status_code == 403
    assert refused.json["error"] == "foreign_stream_key"


def test_stream_key_regeneration_revokes_the_old_key(client, factory, scene, db_session):
    occ = scene.occurrence.id
    headers = factory.headers(scene.trainer)
    first = stream_key(client, occ, headers)
    second = stream_key(client, occ, headers)
    assert first != second
    # The old key is refused (401); the new one passes auth and reaches the SDP check.
    assert client.post(f"/whip/{occ}", data="x", headers=bearer(first)).status_code == 401
    assert client.post(f"/whip/{occ}", data="x", headers=bearer(second)).status_code == 400
    member_unit_user = factory.user("organizer", org_unit_id=scene.unit.id)
    refused = client.post(f"/api/v1/occurrences/{occ}/stream-key",
                          headers=factory.headers(member_unit_user))
    assert refused.status_code == 403


def test_whep_not_live_and_media_off(app, client, factory, scene, db_session):
    occ = scene.occurrence.id
    site_token = issue_site_token(db_session, scene.site)
    db_session.commit()

    async def offer():
        sub = Subscriber()
        await sub.pc.setLocalDescription(await sub.pc.createOffer())
        sdp = sub.pc.localDescription.sdp
        await sub.close()
        return sdp

    sdp = run(offer())
    waiting = client.post(f"/whep/{occ}", data=sdp, headers=bearer(site_token))
    assert waiting.status_code == 503
    assert waiting.json["error"] == "not_live"
    assert int(waiting.headers["Retry-After"]) > 0
    # A site the lecture is not aimed at is refused.
    other_token = issue_site_token(db_session, scene.other_site)
    db_session.commit()
    assert client.post(f"/whep/{occ}", data=sdp,
                       headers=bearer(other_token)).status_code == 403
    assert client.post(f"/whep/{occ}", data=sdp, headers=bearer("nope")).status_code == 401
    live = client.get(f"/api/v1/occurrences/{occ}/live",
                      headers={"Authorization": f"Bearer {site_token}"})
    assert live.json["state"] == "waiting"
    app.config["YUANJIAO_MEDIA"] = "off"
    off = client.post(f"/whep/{occ}", data=sdp, headers=bearer(site_token))
    assert off.status_code == 503
    assert off.json["error"] == "media_unavailable"


@pytest.mark.media
def test_publish_watch_stop_and_recording(app, client, factory, scene, db_session):
    """OBS-style WHIP publish, a site screen and the admin watch over WHEP, stop, replay."""
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    admin_headers = factory.headers(factory.user("admin"))
    db_session.commit()
    seen: dict = {}
    ended_signals: list = []

    def on_ended(sender, **kw):
        ended_signals.append((sender, kw))

    service.broadcast_ended.connect(on_ended)
    site_auth = {"Authorization": f"Bearer {site_token}"}
    site_name = scene.site.name

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        site = Subscriber()
        await site.start(whep_signal(client, occ, bearer(site_token), seen))
        admin = Subscriber()
        await admin.start(whep_signal(client, occ, {**admin_headers, **SDP}, seen))
        assert await site.wait_frames(30, 10)
        assert await admin.wait_frames(30, 10)
        # A second publisher (another trainer's key would be 403); same trainer replaces.
        live = await in_thread(client.get, f"/api/v1/occurrences/{occ}/live",
                               headers=site_auth)
        assert live.json["state"] == "live"
        assert await wait_for(lambda: len(client.get(
            f"/api/v1/occurrences/{occ}/live", headers=site_auth).json["sites"]) == 2, 5)
        sites = client.get(f"/api/v1/occurrences/{occ}/live", headers=site_auth).json["sites"]
        assert {s.get("site_name") for s in sites} >= {site_name}
        await asyncio.sleep(2)
        response = await in_thread(client.delete, seen["whip"], headers=bearer(key))
        assert response.status_code == 200
        await asyncio.wait_for(site.ended.wait(), 5)
        await asyncio.wait_for(admin.ended.wait(), 5)
        for peer in (publisher, site, admin):
            await peer.close()

    try:
        run(scenario())
        media.runtime(app).drain()
        assert ended_signals
        assert ended_signals[0][0] == occ
    finally:
        service.broadcast_ended.disconnect(on_ended)
    live = client.get(f"/api/v1/occurrences/{occ}/live", headers=site_auth)
    assert live.json["state"] == "ended"
    db_session.expire_all()
    recording = service.recording_for_occurrence(db_session, occ)
    assert recording is not None
    assert recording.status == "complete"
    assert recording.duration_seconds > 1
    assert recording.size_bytes > 0
    assert ended_signals[0][1]["recording_id"] == recording.id
    listed = client.get(f"/api/v1/occurrences/{occ}/recordings", headers=site_auth)
    assert [r["id"] for r in listed.json] == [recording.id]
    url = listed.json[0]["url"]
    assert url == f"/recordings/{recording.id}"
    with client.get(url, headers=admin_headers) as whole:
        assert whole.status_code == 200
        assert whole.mimetype == "video/webm"
        assert len(whole.data) == recording.size_bytes
    with client.get(url, headers={**admin_headers, "Range": "bytes=0-99"}) as part:
        assert part.status_code == 206
        assert len(part.data) == 100
    path = service.recording_file(app.config["YUANJIAO_RECORDINGS_DIR"], recording)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 30
    # Someone outside the lecture cannot fetch it.
    stranger = factory.user("site_operator", site_id=scene.other_site.id)
    assert client.get(url, headers=factory.headers(stranger)).status_code == 403
    assert db_session.query(Recording).count() == 1
