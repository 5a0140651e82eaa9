"""HLS for members watching alone: the playlist from the engine's single decode, its
segments dated, and who may fetch them."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import av
import pytest

from attendance.watching import Watching, watching
from tests.video.conftest import in_thread, run
from tests.video.peers import Publisher
from tests.video.test_signaling import bearer, stream_key, whip_signal

DATE = re.compile(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#[^\n]*\n)*(seg\d+\.ts)")


def _get(client, url: str, headers: dict | None = None) -> dict:
    """One request, its response read and closed (file responses hold the file open)."""
    with client.get(url, headers=headers or {}) as response:
        return {"status": response.status_code, "mimetype": response.mimetype,
                "headers": dict(response.headers), "data": response.get_data(),
                "json": response.json if response.is_json else None}


def _dates(playlist: str) -> list[tuple[dt.datetime, str]]:
    out = []
    for stamp, name in DATE.findall(playlist):
        # ffmpeg writes +0000; fromisoformat wants +00:00 before Python 3.11
        stamp = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", stamp)
        out.append((dt.datetime.fromisoformat(stamp), name))
    return out


@pytest.mark.media
def test_member_plays_hls_dated_near_the_clock(app, client, factory, scene, db_session):
    occ = scene.occurrence.id
    member = factory.member(scene.unit, scene.site, name="王建国")
    viewer = factory.user("member", member_id=member.id)
    stranger_member = factory.member(factory.org_unit("别的支部"), name="李四")
    stranger = factory.user("member", member_id=stranger_member.id)
    key = stream_key(client, occ, factory.headers(scene.trainer))
    viewer_auth = factory.headers(viewer)
    stranger_auth = factory.headers(stranger)
    url = f"/live/{occ}/hls/index.m3u8"
    # Nothing on air yet: not live (retry), not an error page.
    waiting = _get(client, url, viewer_auth)
    assert waiting["status"] == 503
    assert waiting["json"]["error"] == "not_live"
    assert int(waiting["headers"]["Retry-After"]) > 0
    seen: dict = {}
    checked: dict = {}
    member_id = member.id
    registry = watching(app)

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        playlist = None
        for _ in range(100):  # the first segments within a few seconds
            response = await in_thread(_get, client, url, viewer_auth)
            if response["status"] == 200 and len(_dates(response["data"].decode())) >= 3:
                playlist = response
                break
            await asyncio.sleep(0.2)
        assert playlist is not None, "no playlist with three segments within 20 s"
        checked["now"] = dt.datetime.now(dt.UTC)
        checked["playlist"] = playlist["data"].decode()
        checked["mimetype"] = playlist["mimetype"]
        checked["cache"] = playlist["headers"].get("Cache-Control")
        # Only the playlist so far: no HLS session for attendance (nothing is playing).
        checked["held_before"] = registry.holds(occ, member_id)
        name = _dates(checked["playlist"])[-1][1]
        segment = await in_thread(_get, client, f"/live/{occ}/hls/{name}", viewer_auth)
        checked["held_after"] = registry.holds(occ, member_id)
        checked["segment"] = (segment["status"], segment["mimetype"], segment["data"])
        checked["stranger"] = (await in_thread(_get, client, url, stranger_auth))["status"]
        checked["anonymous"] = (await in_thread(_get, client, url))["status"]
        checked["bad_name"] = (await in_thread(_get, client, f"/live/{occ}/hls/..%2Fsecret_key",
                                               viewer_auth))["status"]
        await in_thread(client.delete, seen["whip"], headers=bearer(key))
        await publisher.close()

    run(scenario())
    # A fetched segment is what binds the member to a playing HLS session.
    assert checked["held_before"] is False
    assert checked["held_after"] is True
    assert checked["mimetype"] == "application/vnd.apple.mpegurl"
    assert checked["cache"] == "no-cache"
    dates = _dates(checked["playlist"])
    assert all(d.tzinfo is not None for d, _ in dates)
    assert [d for d, _ in dates] == sorted(d for d, _ in dates)
    # While live, the newest segment began within 6 s of the server's clock.
    newest = dates[-1][0]
    assert abs((checked["now"] - newest).total_seconds()) <= 6, (checked["now"], newest)
    status, mimetype, data = checked["segment"]
    assert status == 200
    assert mimetype == "video/mp2t"
    path = app.config["YUANJIAO_HLS_DIR"] + f"/{occ}/check.ts"
    with open(path, "wb") as out:
        out.write(data)
    with av.open(path) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds.get("video") == "h264"
        assert kinds.get("audio") == "aac"
        assert sum(1 for _ in container.decode(video=0)) > 5
    assert checked["stranger"] == 403
    assert checked["anonymous"] == 401
    assert checked["bad_name"] in (404, 503)
    # The broadcast ended: the playlist says so.
    for _ in range(50):
        ended = _get(client, url, viewer_auth)["data"].decode()
        if "#EXT-X-ENDLIST" in ended:
            break
        run(asyncio.sleep(0.1))
    assert "#EXT-X-ENDLIST" in ended


def test_an_hls_session_lapses_without_segment_fetches():
    registry = Watching()
    assert not registry.holds(3, 7)
    registry.fetched(3, 7, 30)
    assert registry.holds(3, 7)
    assert not registry.holds(3, 8)
    registry.fetched(3, 7, -1)  # as if the last fetch were longer ago than the session
    assert not registry.holds(3, 7)


def test_a_revoked_token_or_an_ended_session_fetches_no_more_hls(client, factory, scene,
                                                                 db_session):
    """The grant remembered for a credential goes with it: the next request after
    `DELETE /api/v1/auth/token`, or after a password change ends his sessions, is refused
    (it was served from the grant for YUANJIAO_ATTENDANCE_AUTH_TTL seconds)."""
    from accounts import service as accounts

    member = factory.member(scene.unit, scene.site, name="王建国")
    viewer = factory.user("member", member_id=member.id)
    url = f"/live/{scene.occurrence.id}/hls/index.m3u8"

    auth = factory.headers(viewer)
    assert _get(client, url, auth)["status"] == 503  # may watch; nothing on air yet
    assert client.delete("/api/v1/auth/token", headers=auth).status_code == 204
    assert _get(client, url, auth)["status"] == 401

    auth = factory.headers(viewer)
    assert _get(client, url, auth)["status"] == 503
    accounts.revoke_user_tokens(viewer)  # as a password change or deactivation does
    db_session.commit()
    assert _get(client, url, auth)["status"] == 401
