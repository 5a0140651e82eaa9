"""Security, live video: who sees connection handles and who may end a WHIP/WHEP resource.

Finding 1 of issue 10: any viewer saw every resource id, `DELETE /whep/<any>/<resource>`
needed no login and stopped before checking the occurrence, and a trainer could end
another occurrence's broadcast through his own occurrence's URL.
"""

from __future__ import annotations

import asyncio

import pytest

from accounts.service import issue_site_token
from core.api import SiteScreen
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, Subscriber
from video import service

SDP = {"Content-Type": "application/sdp"}


def test_may_end_resource_rules(db_session, factory, scene):
    """The rule itself, without media: occurrence first, then owner or manager."""
    occ = scene.occurrence
    viewer = factory.user("site_operator", site_id=scene.site.id)
    other_viewer = factory.user("site_operator", site_id=scene.site.id)
    organizer = factory.user("organizer", org_unit_id=scene.unit.id)
    foreign_organizer = factory.user("organizer", org_unit_id=factory.org_unit("外单位").id)
    other_trainer = factory.user("trainer")
    admin = factory.user("admin")
    mine = {"kind": "subscriber", "occurrence_id": occ.id,
            "info": {"owner": service.resource_owner(viewer)}}
    assert service.may_end_resource(db_session, viewer, occ, mine)
    assert not service.may_end_resource(db_session, other_viewer, occ, mine)
    assert not service.may_end_resource(db_session, foreign_organizer, occ, mine)
    assert not service.may_end_resource(db_session, other_trainer, occ, mine)
    assert not service.may_end_resource(db_session, SiteScreen(site_id=scene.site.id), occ, mine)
    for manager in (organizer, admin, scene.trainer):
        assert service.may_end_resource(db_session, manager, occ, mine)
    # The same resource named under another occurrence: nobody, not even an admin.
    foreign = {**mine, "occurrence_id": scene.other_occurrence.id}
    assert not service.may_end_resource(db_session, viewer, occ, foreign)
    assert not service.may_end_resource(db_session, admin, occ, foreign)
    assert not service.may_end_resource(db_session, admin, occ, None)
    # A screen's resource belongs to that site's screens.
    screen = SiteScreen(site_id=scene.site.id)
    screens = {"kind": "subscriber", "occurrence_id": occ.id,
               "info": {"owner": service.resource_owner(screen)}}
    assert service.may_end_resource(db_session, screen, occ, screens)
    assert not service.may_end_resource(db_session, SiteScreen(site_id=scene.other_site.id),
                                        occ, screens)
    # The publisher's connection: its publisher or the managers.
    published = {"kind": "publisher", "occurrence_id": occ.id,
                 "info": {"user_id": scene.trainer.id}}
    assert service.may_end_resource(db_session, scene.trainer, occ, published)
    assert service.may_end_resource(db_session, organizer, occ, published)
    assert not service.may_end_resource(db_session, other_trainer, occ, published)
    assert not service.may_end_resource(db_session, viewer, occ, published)
    # Manage: trainer, admin, organizer in scope; not a viewer, screen or foreign organizer.
    assert service.can_manage_live(db_session, organizer, occ)
    assert not service.can_manage_live(db_session, foreign_organizer, occ)
    assert not service.can_manage_live(db_session, viewer, occ)
    assert not service.can_manage_live(db_session, screen, occ)


def test_delete_needs_a_login_before_anything(client, scene):
    """Without credentials: 401, whatever the resource id (nothing is looked up)."""
    occ = scene.occurrence.id
    assert client.delete(f"/whep/{occ}/0123456789abcdef").status_code == 401
    assert client.delete(f"/whip/{occ}/0123456789abcdef").status_code == 401


@pytest.mark.media
def test_resources_stay_with_their_owner(app, client, factory, scene, db_session):
    occ, other_occ = scene.occurrence.id, scene.other_occurrence.id
    trainer_headers = factory.headers(scene.trainer)
    site_token = issue_site_token(db_session, scene.site)
    other_site_token = issue_site_token(db_session, scene.other_site)
    member_unit = scene.unit
    viewer = factory.user("site_operator", site_id=scene.site.id)
    viewer_headers = factory.headers(viewer)
    viewer_name = viewer.username
    organizer_headers = factory.headers(factory.user("organizer", org_unit_id=member_unit.id))
    other_trainer_headers = factory.headers(factory.user("trainer"))
    db_session.commit()
    site_auth = {"Authorization": f"Bearer {site_token}"}

    async def post(url, headers):
        response = await in_thread(client.post, url, data=headers.pop("_sdp"),
                                   headers={**headers, **SDP})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response

    def signal(url, headers):
        async def _signal(sdp):
            response = await post(url, {**headers, "_sdp": sdp})
            return response.get_data(as_text=True), response.headers["Location"]
        return _signal

    def delete(location, headers=None):
        return in_thread(client.delete, location, headers=headers or {})

    async def scenario():
        publisher, other_publisher = Publisher(audio=False), Publisher(audio=False)
        await publisher.start(signal(f"/whip/{occ}", trainer_headers))
        await other_publisher.start(signal(f"/whip/{other_occ}", trainer_headers))
        screen = Subscriber(audio=False)
        await screen.start(signal(f"/whep/{occ}", site_auth))
        watcher = Subscriber(audio=False)
        await watcher.start(signal(f"/whep/{occ}", viewer_headers))
        far = Subscriber(audio=False)
        await far.start(signal(f"/whep/{other_occ}",
                               {"Authorization": f"Bearer {other_site_token}"}))
        assert await screen.wait_frames(5, 10)
        assert await watcher.wait_frames(5, 10)
        screen_rid = screen.resource_id.rsplit("/", 1)[1]
        far_rid = far.resource_id.rsplit("/", 1)[1]
        other_pub_rid = other_publisher.resource_id.rsplit("/", 1)[1]

        # The live API: a viewer sees names and counts, no handles; managers see handles.
        assert await wait_for(lambda: len(client.get(
            f"/api/v1/occurrences/{occ}/live", headers=site_auth).json["sites"]) == 2, 5)
        seen = client.get(f"/api/v1/occurrences/{occ}/live", headers=site_auth).json["sites"]
        assert all("resource_id" not in s for s in seen)
        seen = client.get(f"/api/v1/occurrences/{occ}/live", headers=viewer_headers).json
        assert all("resource_id" not in s for s in seen["sites"])
        managed = client.get(f"/api/v1/occurrences/{occ}/live", headers=organizer_headers).json
        assert screen_rid in {s["resource_id"] for s in managed["sites"]}
        # Viewers watching alone are named to managers only; others see a count.
        assert viewer_name in {s.get("user_name") for s in managed["sites"]}
        for entry in seen["sites"]:
            assert "user_name" not in entry
            assert "member_name" not in entry
            if entry.get("kind") != "site":
                assert entry["label"] == ""

        # No login, another viewer, another occurrence's URL: refused, nothing stops.
        assert (await delete(screen.resource_id)).status_code == 401
        assert (await delete(screen.resource_id, viewer_headers)).status_code == 404
        assert (await delete(f"/whep/{occ}/{far_rid}", site_auth)).status_code == 404
        assert (await delete(f"/whep/{occ}/{far_rid}", trainer_headers)).status_code == 404
        assert (await delete(f"/whep/{other_occ}/{screen_rid}", site_auth)).status_code == 404
        # A trainer cannot end another occurrence's broadcast through his own URL, nor
        # can another trainer end this one.
        assert (await delete(f"/whip/{occ}/{other_pub_rid}", trainer_headers)).status_code \
            == 404
        assert (await delete(publisher.resource_id, other_trainer_headers)).status_code \
            == 404
        assert (await delete(publisher.resource_id, viewer_headers)).status_code == 404
        # A WHEP URL does not end the publisher either.
        pub_rid = publisher.resource_id.rsplit("/", 1)[1]
        assert (await delete(f"/whep/{occ}/{pub_rid}", viewer_headers)).status_code == 404
        before = (screen.frames, watcher.frames, far.frames)
        await asyncio.sleep(1)
        assert screen.frames > before[0]
        assert watcher.frames > before[1]
        assert far.frames > before[2]

        # The owner leaves; a manager ends another's connection.
        assert (await delete(watcher.resource_id, viewer_headers)).status_code == 200
        assert (await delete(screen.resource_id, organizer_headers)).status_code == 200
        await asyncio.wait_for(screen.ended.wait(), 5)
        assert (await delete(publisher.resource_id, trainer_headers)).status_code == 200
        assert (await delete(other_publisher.resource_id, trainer_headers)).status_code == 200
        for peer in (publisher, other_publisher, screen, watcher, far):
            await peer.close()

    run(scenario())


def test_live_room_events_carry_no_names_or_handles():
    from video.media import public_sites

    stats = {"sites": [
        {"resource_id": "r1", "kind": "site", "label": "一号会议室", "site_id": 1,
         "site_name": "一号会议室", "state": "connected"},
        {"resource_id": "r2", "kind": "member", "label": "张三", "member_id": 7,
         "member_name": "张三", "user_name": "zhangsan", "state": "connected"}]}
    public = public_sites(stats)
    assert [e.get("label") for e in public] == ["一号会议室", ""]
    assert all("resource_id" not in e and "member_name" not in e for e in public)
    full = public_sites(stats, with_resources=True, with_names=True)
    assert [e["resource_id"] for e in full] == ["r1", "r2"]
    assert full[1]["member_name"] == "张三"
