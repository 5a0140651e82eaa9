"""A member watching alone is bound to his real WHEP connection (media-bound presence)."""

from __future__ import annotations

import pytest

from attendance.watching import watching
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, Subscriber
from tests.video.test_signaling import bearer, stream_key, whep_signal, whip_signal
from video import media

pytestmark = pytest.mark.media


def test_a_members_whep_connection_is_what_lets_his_heartbeats_count(
        app, client, factory, scene, db_session):
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    member = factory.member(scene.unit, scene.site, "张三")
    member_user = factory.user("member", member_id=member.id)
    headers = {**factory.headers(member_user), "Content-Type": "application/sdp"}
    member_id = member.id
    db_session.commit()
    seen: dict = {}
    registry = watching(app)

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        assert not registry.holds(occ, member_id)
        viewer = Subscriber()
        await viewer.start(whep_signal(client, occ, headers, seen))
        assert await viewer.wait_frames(10, 10)
        assert await wait_for(lambda: registry.holds(occ, member_id), 5)
        response = await in_thread(client.delete, seen["whep"][0], headers=headers)
        assert response.status_code == 200
        assert await wait_for(lambda: not registry.holds(occ, member_id), 5)
        for peer in (publisher, viewer):
            await peer.close()

    run(scenario())
    media.runtime(app).drain()
    assert not registry.holds(occ, member_id)
