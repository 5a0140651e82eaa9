"""A connection's cached rights (attendance/events.py) end as soon as what they rest on
changes (core/authepoch.py), and are not read again while nothing did."""

from __future__ import annotations

from config import replace_settings
from tests.attendance.conftest import emit


def test_a_deactivated_member_is_refused_at_his_next_heartbeat(att_socket, scene,
                                                                db_session, app):
    """Before: his identity stayed cached for YUANJIAO_ATTENDANCE_AUTH_TTL (30 s)."""
    from accounts.models import User

    replace_settings(app, viewer_requires_media=False)
    sc = att_socket("member0")
    occ = scene.occurrence.id
    assert emit(sc, "viewer:join", {"occurrence_id": occ, "event_id": "j1"})["ok"]
    user = db_session.get(User, scene.users["member0"].id)
    user.active = False
    db_session.commit()
    ack = emit(sc, "viewer:heartbeat", {"occurrence_id": occ, "event_id": "h1"})
    assert ack["ok"] is False
    assert ack["error"] == "login_required"


def test_a_site_taken_off_the_session_stops_its_roll_call_at_once(att_socket, scene,
                                                                  db_session):
    mark = {"occurrence_id": scene.occurrence.id, "site_id": scene.site_b.id,
            "member_ids": [scene.members[2].id], "state": "present"}
    screen = att_socket("screen_b")
    assert emit(screen, "roll_call:mark", {**mark, "event_id": "a"})["ok"] is True
    study = db_session.merge(scene.study)
    study.sites.remove(db_session.merge(scene.site_b))
    study.org_units.clear()  # nor under a targeted unit
    db_session.commit()
    ack = emit(screen, "roll_call:mark", {**mark, "event_id": "b"})
    assert ack["ok"] is False
    assert ack["error"] == "forbidden"


def test_unchanged_rights_are_not_read_again(att_socket, scene, app):
    """The hot path's point: with nothing changed, a connection's heartbeats and marks read
    no user, token, site or occurrence after the first (counted as SELECTs)."""
    import traceback

    from sqlalchemy import event

    from extensions import db

    replace_settings(app, viewer_requires_media=False)
    occ = scene.occurrence.id
    member, screen = att_socket("member0"), att_socket("screen_a")
    mark = {"occurrence_id": occ, "site_id": scene.site_a.id, "state": "present"}
    assert emit(member, "viewer:join", {"occurrence_id": occ, "event_id": "j"})["ok"]
    assert emit(screen, "roll_call:mark", {**mark, "member_ids": [scene.members[0].id],
                                           "event_id": "m0"})["ok"]
    second = scene.members[1].id
    selects: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT") and not any(
                "attendance/writer.py" in frame.filename  # its rules hold at once
                for frame in traceback.extract_stack()):
            selects.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        replace_settings(app, attendance_auth_ttl=0)  # past the short TTL at once
        for i in range(3):
            assert emit(member, "viewer:heartbeat", {"occurrence_id": occ,
                                                     "event_id": f"h{i}"})["ok"]
            assert emit(screen, "roll_call:mark", {**mark, "member_ids": [second],
                                                   "event_id": f"m1{i}"})["ok"]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert selects == []
