"""The /attendance Socket.IO namespace: every event, and each wrong caller refused."""

from __future__ import annotations

from sqlalchemy import func, select

from attendance.models import AttendanceEvent
from config import settings
from tests.attendance.conftest import emit, received


def count_events(db_session, **where) -> int:
    q = select(func.count()).select_from(AttendanceEvent)
    for key, value in where.items():
        q = q.where(getattr(AttendanceEvent, key) == value)
    return db_session.scalar(q)


def test_connect_without_auth_is_refused(socket_client_factory, scene):
    sc = socket_client_factory(namespace="/attendance")
    assert not sc.is_connected("/attendance")


def test_connect_with_a_bad_token_is_refused(socket_client_factory, scene):
    sc = socket_client_factory(namespace="/attendance", auth={"token": "nope"})
    assert not sc.is_connected("/attendance")


def test_ping_is_a_no_op_round_trip(att_socket):
    assert emit(att_socket("screen_a"), "ping", {"n": 1}) == {"ok": True, "echo": {"n": 1}}


def test_site_join_marks_the_site_online_and_returns_its_roster(att_socket, scene, db_session):
    sc = att_socket("screen_a")
    ack = emit(sc, "site:join", {"occurrence_id": scene.occurrence.id,
                                 "site_id": scene.site_a.id})
    assert ack["ok"] is True
    assert ack["site"]["expected_count"] == 2
    assert [m["name"] for m in ack["site"]["expected"]] == ["张三", "李四"]
    assert count_events(db_session, type="site_online", site_id=scene.site_a.id) == 1
    sc.disconnect(namespace="/attendance")
    db_session.expire_all()
    assert count_events(db_session, type="site_offline", site_id=scene.site_a.id) == 1


def test_site_join_refuses_another_sites_screen_and_a_foreign_occurrence(att_socket, scene):
    sc = att_socket("screen_a")
    ack = emit(sc, "site:join", {"occurrence_id": scene.occurrence.id,
                                 "site_id": scene.site_b.id})
    assert ack == {"ok": False, "error": "forbidden", "message": ack["message"],
                   "details": {"site_id": scene.site_b.id}}
    ack = emit(sc, "site:join", {"occurrence_id": scene.foreign_occurrence.id,
                                 "site_id": scene.site_a.id})
    assert ack["ok"] is False
    assert ack["error"] == "forbidden"
    assert emit(sc, "site:join", {"occurrence_id": "x"})["error"] == "validation_error"
    assert emit(sc, "site:join", {"occurrence_id": 999, "site_id": 1})["error"] == "not_found"


def test_roll_call_marks_many_and_a_retry_is_stored_once(att_socket, scene, db_session):
    dash = att_socket("organizer")
    assert emit(dash, "dashboard:join", {"occurrence_id": scene.occurrence.id})["ok"]
    dash.get_received("/attendance")
    op = att_socket("operator_a")
    ids = [scene.members[0].id, scene.members[1].id]
    payload = {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
               "member_ids": ids, "state": "present", "event_id": "rc-1"}
    ack = emit(op, "roll_call:mark", payload)
    assert ack["ok"] is True
    assert (ack["stored"], ack["repeated"]) == (2, 0)
    again = emit(op, "roll_call:mark", payload)
    assert (again["stored"], again["repeated"]) == (0, 2)
    assert [e["id"] for e in again["events"]] == [e["id"] for e in ack["events"]]
    assert count_events(db_session, type="check_in") == 2
    updates = received(dash, "attendance:update")
    assert sorted(u["member_id"] for u in updates) == sorted(ids)
    assert all(u["present"] and u["site_id"] == scene.site_a.id for u in updates)
    out = emit(op, "roll_call:mark", {**payload, "state": "checked_out", "event_id": "rc-2",
                                      "member_ids": ids[:1]})
    assert out["ok"]
    assert out["events"][0]["type"] == "check_out"


def test_roll_call_refuses_wrong_callers(att_socket, scene, db_session):
    base = {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
            "member_ids": [scene.members[0].id], "state": "present", "event_id": "x"}
    for who in ("operator_b", "screen_b", "member0", "other_organizer", "trainer"):
        ack = emit(att_socket(who), "roll_call:mark", base)
        assert ack["ok"] is False, who
        assert ack["error"] == "forbidden", who
    foreign = {**base, "occurrence_id": scene.foreign_occurrence.id}
    assert emit(att_socket("operator_a"), "roll_call:mark", foreign)["error"] == "forbidden"
    bad = emit(att_socket("operator_a"), "roll_call:mark", {**base, "state": "maybe"})
    assert bad["error"] == "validation_error"
    assert count_events(db_session, type="check_in") == 0


def test_roll_call_refuses_a_member_checked_in_at_another_site(att_socket, scene, db_session):
    member = scene.members[0].id
    base = {"occurrence_id": scene.occurrence.id, "member_ids": [member], "state": "present"}
    assert emit(att_socket("screen_a"), "roll_call:mark",
                {**base, "site_id": scene.site_a.id, "event_id": "a"})["ok"]
    ack = emit(att_socket("screen_b"), "roll_call:mark",
               {**base, "site_id": scene.site_b.id, "event_id": "b"})
    assert ack["ok"] is False
    assert ack["error"] == "checked_in_elsewhere"
    assert "一号会议室" in ack["message"]
    assert ack["details"]["site_id"] == scene.site_a.id
    assert count_events(db_session, type="check_in") == 1


def test_qr_token_for_the_screen_only(att_socket, scene):
    ack = emit(att_socket("screen_a"), "qr:token",
               {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id})
    assert ack["ok"] is True
    assert ack["url"].startswith("http://")
    assert "/checkin/" in ack["url"]
    assert ack["svg"].startswith("<svg")
    assert ack["rotate_seconds"] == 25
    for who in ("screen_b", "member0", "operator_b"):
        refused = emit(att_socket(who), "qr:token",
                       {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id})
        assert refused["error"] == "forbidden", who


def _media(app, occ: int, member_id: int, resource_id: str, *, joined: bool = True) -> None:
    """What the media engine tells the app when a member's WHEP connection comes up or
    goes (video.media.handle_event sends these signals on its worker, in an app context)."""
    from video import service as video_service

    signal = video_service.subscriber_joined if joined else video_service.subscriber_left
    with app.app_context():
        signal.send(occ, info={"kind": "member", "member_id": member_id},
                    resource_id=resource_id)


def test_viewer_join_heartbeat_leave_for_himself(att_socket, scene, db_session, app):
    dash = att_socket("admin")
    emit(dash, "dashboard:join", {"occurrence_id": scene.occurrence.id})
    dash.get_received("/attendance")
    sc = att_socket("member0")
    occ = scene.occurrence.id
    _media(app, occ, scene.members[0].id, "whep-1")
    assert emit(sc, "viewer:join", {"occurrence_id": occ, "event_id": "j1"})["stored"] is True
    # Within the minute after the join, heartbeats are acknowledged, not stored.
    assert emit(sc, "viewer:heartbeat", {"occurrence_id": occ, "event_id": "h1"}) == {
        "ok": True, "stored": False, "coalesced": True}
    assert emit(sc, "viewer:leave", {"occurrence_id": occ, "event_id": "l1"})["ok"]
    source = f"viewer:member:{scene.members[0].id}"
    assert count_events(db_session, source=source) == 2
    updates = received(dash, "attendance:update")
    assert [(u["type"], u["present"], u["site_id"]) for u in updates] == [
        ("viewer_join", True, None), ("viewer_leave", False, None)]
    assert updates[0]["name"] == "张三"


def test_watching_without_a_media_session_counts_nothing(att_socket, scene, db_session, app):
    """viewer:join and heartbeats with no live WHEP connection of that member: refused, and
    he ends the occurrence with 0 minutes, not present. Once his connection is up they
    count; when it goes, they are refused again."""
    import datetime as dt

    from attendance import service
    from core.types import utcnow

    occ, member = scene.occurrence.id, scene.members[0].id
    sc = att_socket("member0")
    for i, kind in enumerate(["viewer:join"] + ["viewer:heartbeat"] * 5):
        ack = emit(sc, kind, {"occurrence_id": occ, "event_id": f"x{i}"})
        assert (ack["ok"], ack["error"]) == (False, "no_media_session"), ack
    # Another member's connection does not count for him.
    _media(app, occ, scene.members[1].id, "whep-other")
    ack = emit(sc, "viewer:join", {"occurrence_id": occ, "event_id": "x9"})
    assert ack["error"] == "no_media_session"
    assert count_events(db_session, member_id=member) == 0
    occurrence = service.get_occurrence(db_session, occ)
    rec = service.records(db_session, occurrence, config=settings(app),
                          now=occurrence.ends_at + dt.timedelta(minutes=1))[member]
    assert (rec.status, rec.minutes) == ("absent", 0.0)
    # With his own connection: counted; after it closed: refused again.
    _media(app, occ, member, "whep-own")
    assert emit(sc, "viewer:join", {"occurrence_id": occ, "event_id": "y1"})["stored"] is True
    _media(app, occ, member, "whep-own", joined=False)
    ack = emit(sc, "viewer:heartbeat", {"occurrence_id": occ, "event_id": "y2"})
    assert ack["error"] == "no_media_session"
    snap = service.snapshot(db_session, occurrence, config=settings(app),
                            now=utcnow() + dt.timedelta(minutes=5))
    assert member not in [m for s in snap["sites"] for m in s["present_ids"]]


def test_a_members_heartbeats_are_stored_at_most_once_a_minute(att_socket, scene, db_session,
                                                               app):
    occ, member = scene.occurrence.id, scene.members[0].id
    _media(app, occ, member, "whep-1")
    sc = att_socket("member0")
    assert emit(sc, "viewer:join", {"occurrence_id": occ, "event_id": "j"})["stored"]
    acks = [emit(sc, "viewer:heartbeat", {"occurrence_id": occ, "event_id": f"h{i}"})
            for i in range(300)]
    assert all(a["ok"] for a in acks)
    assert sum(1 for a in acks if a["stored"]) == 0
    # A second tab of the same member shares the bound.
    other = att_socket("member0")
    assert not emit(other, "viewer:heartbeat", {"occurrence_id": occ, "event_id": "t"})["stored"]
    assert count_events(db_session, member_id=member) == 1


def test_viewer_events_refuse_non_members_and_foreign_occurrences(att_socket, scene):
    occ = scene.occurrence.id
    ack = emit(att_socket("outsider"), "viewer:join", {"occurrence_id": occ, "event_id": "x"})
    assert ack["error"] == "forbidden"
    for who in ("organizer", "screen_a"):
        ack = emit(att_socket(who), "viewer:join", {"occurrence_id": occ, "event_id": "x"})
        assert ack["error"] == "forbidden", who
    ack = emit(att_socket("member0"), "viewer:heartbeat",
               {"occurrence_id": scene.foreign_occurrence.id, "event_id": "x"})
    assert ack["error"] == "forbidden"
    ack = emit(att_socket("member0"), "viewer:join", {"occurrence_id": occ})
    assert ack["error"] == "validation_error"


def test_dashboard_join_gives_a_snapshot_to_managers_only(att_socket, scene):
    emit(att_socket("screen_a"), "roll_call:mark", {
        "occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
        "member_ids": [scene.members[0].id], "state": "present", "event_id": "a"})
    ack = emit(att_socket("organizer"), "dashboard:join", {"occurrence_id": scene.occurrence.id})
    snap = ack["snapshot"]
    assert (snap["expected_count"], snap["present_count"]) == (4, 1)
    site_a = next(s for s in snap["sites"] if s["site_id"] == scene.site_a.id)
    assert site_a["present_ids"] == [scene.members[0].id]
    assert [m["name"] for m in site_a["present"]] == ["张三"]
    for who in ("other_organizer", "operator_a", "member0", "screen_a", "trainer"):
        refused = emit(att_socket(who), "dashboard:join", {"occurrence_id": scene.occurrence.id})
        assert refused["error"] == "forbidden", who


def test_broadcast_join_gives_headcounts_to_the_trainer(att_socket, scene):
    trainer = att_socket("trainer")
    ack = emit(trainer, "broadcast:join", {"occurrence_id": scene.occurrence.id})
    assert ack["ok"] is True
    counts = {s["site_id"]: (s["present_count"], s["expected_count"])
              for s in ack["snapshot"]["sites"]}
    assert counts == {scene.site_a.id: (0, 2), scene.site_b.id: (0, 2)}
    assert "expected" not in ack["snapshot"]["sites"][0]
    trainer.get_received("/attendance")
    emit(att_socket("screen_b"), "roll_call:mark", {
        "occurrence_id": scene.occurrence.id, "site_id": scene.site_b.id,
        "member_ids": [scene.members[2].id], "state": "present", "event_id": "b"})
    assert [u["site_id"] for u in received(trainer, "attendance:update")] == [scene.site_b.id]
    refused = emit(att_socket("outsider"), "broadcast:join",
                   {"occurrence_id": scene.occurrence.id})
    assert refused["error"] == "forbidden"


def test_a_locked_occurrence_refuses_socket_events(att_socket, scene, db_session):
    from attendance import service
    from core.types import utcnow

    service.set_lock(db_session, occurrence=scene.occurrence, locked=True,
                     user=scene.users["organizer"], now=utcnow(), early=True, reason="测试")
    db_session.commit()
    ack = emit(att_socket("screen_a"), "roll_call:mark", {
        "occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
        "member_ids": [scene.members[0].id], "state": "present", "event_id": "a"})
    assert ack["error"] == "occurrence_locked"


def test_handlers_hold_no_pooled_connection_while_the_writer_commits(
        att_socket, scene, db_session, app, monkeypatch):
    """A handler waiting on the writer must not hold a connection: with many screens joining
    at once, they would take the whole pool and the writer would find none left."""
    from attendance.writer import GroupWriter

    seen: list[int] = []
    commit_batch = GroupWriter._commit_batch

    def counting(self, engine, batch):
        seen.append(engine.pool.checkedout())
        return commit_batch(self, engine, batch)

    monkeypatch.setattr(GroupWriter, "_commit_batch", counting)
    occurrence_id, site_id = scene.occurrence.id, scene.site_a.id
    member_id = scene.members[0].id
    db_session.close()
    sc = att_socket("screen_a")
    assert emit(sc, "site:join", {"occurrence_id": occurrence_id, "site_id": site_id})["ok"]
    assert emit(sc, "roll_call:mark", {"occurrence_id": occurrence_id, "site_id": site_id,
                                       "member_ids": [member_id], "state": "present",
                                       "event_id": "pool-1"})["ok"]
    # Counted as each batch begins, before the writer takes its own connection.
    assert seen == [0, 0]


def test_turns_let_a_connections_events_queue_only_in_arrival_order():
    """`_Turns`: event n may queue its appends only once events 1..n-1 have queued theirs
    or ended; an event that ends early (a refusal) hands the turn on too."""
    import threading

    from attendance.events import _Turns

    turns = _Turns()
    first, second, third = turns.take(), turns.take(), turns.take()
    order: list[str] = []

    def queue(name: str, ticket: int) -> None:
        turns.wait(ticket)
        order.append(name)
        turns.hand_on(ticket)

    late = [threading.Thread(target=queue, args=("third", third)),
            threading.Thread(target=queue, args=("second", second))]
    for t in late:
        t.start()
    late[0].join(0.2)
    assert order == []  # both wait for the first
    turns.hand_on(first)  # the first ends without appending anything (refused)
    for t in late:
        t.join(5)
    assert order == ["second", "third"]
    turns.hand_on(second)  # handing on twice (at queueing, then at the end) is harmless
    assert turns.passed == 3
    assert not turns.done


def test_a_rooms_link_dropping_is_not_its_members_leaving(att_socket, scene, db_session, app,
                                                          client):
    """Roll-called members stay present after every socket of their site disconnects: the
    site's offline period is reported (站点离线), the members' stay is not cut."""
    import datetime as dt

    from attendance import service
    from core.types import utcnow

    occ_id, site_id = scene.occurrence.id, scene.site_a.id
    screen, operator = att_socket("screen_a"), att_socket("operator_a")
    for sc in (screen, operator):
        assert emit(sc, "site:join", {"occurrence_id": occ_id, "site_id": site_id})["ok"]
    ids = [scene.members[0].id, scene.members[1].id]
    assert emit(operator, "roll_call:mark", {"occurrence_id": occ_id, "site_id": site_id,
                                             "member_ids": ids, "state": "present",
                                             "event_id": "rc"})["stored"] == 2
    screen.disconnect(namespace="/attendance")
    db_session.expire_all()
    assert count_events(db_session, type="site_offline", site_id=site_id) == 0  # one left
    operator.disconnect(namespace="/attendance")
    db_session.expire_all()
    assert count_events(db_session, type="site_offline", site_id=site_id) == 1

    occurrence = service.get_occurrence(db_session, occ_id)
    # Twenty minutes into the outage, well past the grace period: still counted.
    later = utcnow() + dt.timedelta(minutes=20)
    snap = service.snapshot(db_session, occurrence, config=settings(app), now=later)
    site = next(s for s in snap["sites"] if s["site_id"] == site_id)
    assert site["online"] is False
    assert site["present_count"] == 2
    assert len(site["offline_periods"]) == 1
    # The occurrence ends with the site still offline and no check-out: present.
    after = occurrence.ends_at + dt.timedelta(minutes=1)
    recs = service.records(db_session, occurrence, config=settings(app), now=after)
    assert [(recs[m].status, recs[m].last_leave) for m in ids] == [
        ("present", occurrence.ends_at)] * 2
    rows = {r.member.id: r for r in service.rows(db_session, occurrence, config=settings(app),
                                                 now=after)}
    assert all("站点离线" in rows[m].notes for m in ids)
    # And through the API, now (live): present.
    api = client.get(f"/api/v1/occurrences/{occ_id}/attendance",
                     headers=scene.headers("organizer")).json
    assert {r["member_id"]: r["status"] for r in api if r["member_id"] in ids} == {
        ids[0]: "present", ids[1]: "present"}


def test_roll_call_queued_offline_keeps_its_time_and_is_stored_once(att_socket, scene,
                                                                     db_session):
    import datetime as dt

    from core.types import utcnow

    operator = att_socket("operator_a")
    at = (utcnow() - dt.timedelta(minutes=3)).replace(microsecond=0)
    mark = {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
            "member_ids": [scene.members[0].id], "state": "present", "event_id": "off-1",
            "queued": True, "at": at.isoformat().replace("+00:00", "Z"),
            "clock_offset_ms": 2500}
    first = emit(operator, "roll_call:mark", mark)
    assert first["stored"] == 1, first
    assert emit(operator, "roll_call:mark", mark)["repeated"] == 1
    db_session.expire_all()
    [event] = db_session.scalars(select(AttendanceEvent).where(
        AttendanceEvent.type == "check_in")).all()
    assert event.client_time == at
    assert event.payload == {"queued": True, "clock_offset_ms": 2500}
    # Not queued, 30 minutes back: refused on `at`; queued without a zone: refused too.
    stale = dict(mark, event_id="off-2", queued=False,
                 at=(utcnow() - dt.timedelta(minutes=30)).isoformat())
    ack = emit(operator, "roll_call:mark", stale)
    assert (ack["ok"], ack["error"], ack["details"]["field"]) == (False, "validation_error", "at")
    ack = emit(operator, "roll_call:mark", dict(mark, event_id="off-3", at="2026-01-01T10:00"))
    assert ack["details"]["field"] == "at"
    ack = emit(operator, "roll_call:mark", dict(mark, event_id="off-4", queued="yes"))
    assert ack["details"]["field"] == "queued"


def test_broadcast_join_gets_no_names(att_socket, scene, app):
    """Security (issue 10): `broadcast:join` is a view right: it receives headcount deltas
    without names, and not the dashboard's channel."""
    trainer = att_socket("trainer")
    assert emit(trainer, "broadcast:join", {"occurrence_id": scene.occurrence.id})["ok"]
    organizer = att_socket("organizer")
    assert emit(organizer, "dashboard:join", {"occurrence_id": scene.occurrence.id})["ok"]
    trainer.get_received("/attendance")
    organizer.get_received("/attendance")

    _media(app, scene.occurrence.id, scene.members[0].id, "whep-1")
    ack = emit(att_socket("member0"), "viewer:join", {"occurrence_id": scene.occurrence.id,
                                                      "event_id": "v1"})
    assert ack["ok"], ack
    to_trainer = received(trainer, "attendance:update")
    to_organizer = received(organizer, "attendance:update")
    assert [u["member_id"] for u in to_trainer] == [scene.members[0].id]
    assert all("name" not in u for u in to_trainer)
    assert [u.get("name") for u in to_organizer] == ["张三"]


def test_hot_events_run_in_an_app_context_only(app, att_socket, scene, db_session):
    """`on_hot` handlers get no request context (no session cookie opened per event), know
    their sid, have a refusal acked like any handler's, and record the tokens they used
    when their app context ends."""
    from flask import has_app_context, has_request_context

    from accounts.models import ApiToken
    from accounts.service import hash_token
    from attendance.errors import Forbidden
    from core.principals import principal_for_token
    from core.sockets import on_hot, socket_sid
    from extensions import db, socketio

    def probe(data):
        if data == "refuse":
            raise Forbidden("不行")
        if data == "crash":
            raise RuntimeError("boom")
        principal_for_token(db.session, scene.tokens["screen_a"])
        return {"request": has_request_context(), "app": has_app_context(),
                "sid": socket_sid()}

    on_hot(app, "test:probe", probe, "/attendance")
    sc = att_socket("screen_a")
    row = db_session.scalar(select(ApiToken).where(
        ApiToken.token_hash == hash_token(scene.tokens["screen_a"])))
    row.last_used_at = None
    db_session.commit()
    ack = emit(sc, "test:probe", "look")
    sid = socketio.server.manager.sid_from_eio_sid(sc.eio_sid, "/attendance")
    assert ack == {"request": False, "app": True, "sid": sid}
    db_session.expire_all()
    assert row.last_used_at is not None  # recorded at the app context's end
    assert emit(sc, "test:probe", "refuse")["error"] == "forbidden"
    crash = emit(sc, "test:probe", "crash")
    assert crash == {"ok": False, "error": "internal_error", "message": "服务器内部错误"}


def test_the_frequent_events_are_hot(app):
    """Heartbeats, roll-call marks and pings skip flask-socketio's request context."""
    from attendance.events import HOT
    from core.sockets import on_hot
    from extensions import socketio

    handlers = socketio.server.handlers["/attendance"]
    for name in HOT:
        assert handlers[name].__qualname__ == on_hot.__qualname__ + ".<locals>.run", name
    assert handlers["site:join"].__qualname__ != on_hot.__qualname__ + ".<locals>.run"
