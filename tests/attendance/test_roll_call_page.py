"""The operator's roll-call page: who may open it, its roster and clock, walk-in search,
its service worker; and the operator's 工作台 links to it and to the room screen."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.attendance.conftest import emit, login


def _url(scene, site=None, tail: str = "") -> str:
    site = site or scene.site_a
    return f"/live/{scene.occurrence.id}/site/{site.id}/roll-call{tail}"


@pytest.mark.parametrize("username", ["op_a", "organizer", "admin"])
def test_operator_and_managers_open_the_roll_call(client, scene, username):
    login(client, username)
    r = client.get(_url(scene))
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'id="roll-call"' in html
    assert "js/roll_call.js" in html


@pytest.mark.parametrize("username", ["op_b", "organizer2", "trainer", "m0"])
def test_others_are_refused(client, scene, username):
    login(client, username)
    assert client.get(_url(scene)).status_code == 403
    assert client.get(_url(scene, tail="/state.json")).status_code == 403
    assert client.get(_url(scene, tail="/members?q=张")).status_code == 403


def test_roll_call_needs_a_login(client, scene):
    r = client.get(_url(scene))
    assert r.status_code == 302
    assert "/login" in r.location


def test_state_lists_the_sites_roster_present_members_and_the_server_clock(
        client, scene, att_socket):
    sc = att_socket("operator_a")
    a0 = scene.members[0].id
    ack = emit(sc, "roll_call:mark", {"occurrence_id": scene.occurrence.id,
                                      "site_id": scene.site_a.id, "member_ids": [a0],
                                      "state": "present", "event_id": "e-1"})
    assert ack["ok"], ack
    login(client, "op_a")
    before = dt.datetime.now(dt.UTC)
    state = client.get(_url(scene, tail="/state.json")).get_json()
    server_time = dt.datetime.fromisoformat(state["server_time"])
    assert abs((server_time - before).total_seconds()) < 5
    assert [m["name"] for m in state["expected"]] == ["张三", "李四"]
    assert [m["member_id"] for m in state["present"]] == [a0]


def test_walk_in_search_finds_members_of_the_organization_by_name_or_number(
        client, scene, factory, db_session):
    from org.models import OrgUnit

    # The scene's two branches are both roots; put a third branch under the first.
    sub = factory.org_unit("第一支部第一党小组", kind="group",
                           parent=db_session.get(OrgUnit, scene.unit.id))
    guest = factory.member(sub, None, "张来宾")
    db_session.commit()
    login(client, "op_a")
    names = [m["name"] for m in client.get(_url(scene, tail="/members?q=张")).get_json()]
    assert sorted(names) == ["张三", "张来宾"]
    by_no = client.get(_url(scene, tail=f"/members?q={guest.member_no}")).get_json()
    assert [m["member_id"] for m in by_no] == [guest.id]
    # the other organization's members are not offered
    assert client.get(_url(scene, tail="/members?q=外人")).get_json() == []
    assert client.get(_url(scene, tail="/members?q=")).get_json() == []


def test_service_worker_is_served_under_live_for_the_roll_call_scope(client):
    r = client.get("/live/roll-call-sw.js")
    assert r.status_code == 200
    assert r.mimetype == "text/javascript"
    assert "roll-call" in r.get_data(as_text=True)


def test_operator_home_links_room_screen_and_roll_call_and_nothing_refused(client, scene):
    login(client, "op_a")
    html = client.get("/").get_data(as_text=True)
    occ = scene.occurrence.id
    screen = f"/live/{occ}/site/{scene.site_a.id}"
    assert f'href="{screen}"' in html
    assert f'href="{screen}/roll-call"' in html
    assert f'href="/attendance/{occ}"' not in html  # the organizer's dashboard: 403 for him
    for path in (screen, f"{screen}/roll-call", f"/attendance/{occ}/sign-in-sheet"):
        assert client.get(path).status_code == 200, path
