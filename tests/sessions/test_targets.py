"""One rule of who an occurrence targets (sessions/targets.py), asked alike by video (WHEP)
and attendance (roll call): a site under a targeted unit may both watch and take the roll."""

from __future__ import annotations

import datetime as dt

import pytest

from core.types import utcnow
from sessions import targets
from tests.attendance.conftest import make_session, make_user


@pytest.fixture
def lesson(db_session, factory):
    """Committee U with branch K below it; site A (named), site B in K (not named), site C
    of another committee, site D in K but deactivated. The session names A and U."""
    from accounts.service import issue_site_token, issue_token

    committee = factory.org_unit("党委", kind="committee")
    branch = factory.org_unit("第一支部", parent=committee)
    elsewhere = factory.org_unit("外单位党委", kind="committee")
    site_a = factory.site(committee, "总部会议室")
    site_b = factory.site(branch, "一号会议室")
    site_c = factory.site(elsewhere, "外单位会议室")
    site_d = factory.site(branch, "旧会议室")
    site_d.active = False
    member_b = factory.member(branch, site_b, "张三")
    start = utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    _, occ = make_session(db_session, title="党课", start=start, minutes=60,
                          sites=[site_a], units=[committee])
    users = {name: make_user(db_session, "site_operator", name, site_id=site.id)
             for name, site in (("op_b", site_b), ("op_c", site_c))}
    tokens = {name: issue_token(db_session, user) for name, user in users.items()}
    tokens["screen_b"] = issue_site_token(db_session, site_b)
    tokens["screen_c"] = issue_site_token(db_session, site_c)
    db_session.commit()
    return {"occ": occ, "a": site_a, "b": site_b, "c": site_c, "d": site_d,
            "member_b": member_b, "tokens": tokens}


def test_the_rule(db_session, lesson):
    occ = lesson["occ"]
    assert targets.occurrence_site_ids(db_session, occ) == [lesson["a"].id, lesson["b"].id]
    for key, expected in (("a", True), ("b", True), ("c", False), ("d", False)):
        assert targets.site_is_targeted(db_session, occ, lesson[key]) is expected, key
    assert targets.expected_member_ids(db_session, occ) == [lesson["member_b"].id]


def _whep(client, occ_id: int, token: str):
    return client.post(f"/whep/{occ_id}", data="v=0\r\n",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/sdp"})


def _roll_call(socket_client_factory, token: str, occ_id: int, site_id: int, member_id: int,
               event_id: str) -> dict:
    sc = socket_client_factory(namespace="/attendance", auth={"token": token})
    return sc.emit("roll_call:mark", {"occurrence_id": occ_id, "site_id": site_id,
                                      "member_ids": [member_id], "state": "present",
                                      "event_id": event_id},
                   namespace="/attendance", callback=True)


@pytest.mark.parametrize("who", ["op_b", "screen_b"])
def test_a_site_under_a_targeted_unit_watches_and_takes_the_roll(
        client, socket_client_factory, lesson, who):
    occ_id, site_b = lesson["occ"].id, lesson["b"].id
    watch = _whep(client, occ_id, lesson["tokens"][who])
    # Allowed: the request gets past the right to watch to the media engine (off in tests).
    assert watch.status_code == 503, watch.get_json()
    assert watch.get_json()["error"] == "media_unavailable"
    ack = _roll_call(socket_client_factory, lesson["tokens"][who], occ_id, site_b,
                     lesson["member_b"].id, f"rc-{who}")
    assert ack["ok"] is True, ack
    assert ack["stored"] == 1


@pytest.mark.parametrize("who", ["op_c", "screen_c"])
def test_a_site_outside_the_targets_does_neither(client, socket_client_factory, lesson, who):
    occ_id, site_c = lesson["occ"].id, lesson["c"].id
    watch = _whep(client, occ_id, lesson["tokens"][who])
    assert watch.status_code == 403
    ack = _roll_call(socket_client_factory, lesson["tokens"][who], occ_id, site_c,
                     lesson["member_b"].id, f"rc-{who}")
    assert ack["ok"] is False
    assert ack["error"] == "forbidden"
