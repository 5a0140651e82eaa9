"""The sessions API: contract shapes, offsets everywhere, bad input, conflicts, scope."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from core.types import utcnow

OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)$")


def _future(days=7, hour=19, minute=30) -> str:
    day = (utcnow() + dt.timedelta(days=days)).date()
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00"


def _body(world, **kw) -> dict:
    body = {"title": "党史讲座", "kind": "party_history_lecture", "trainer_id": world.trainer.id,
            "starts_at": _future(), "duration_minutes": 90, "timezone": "Asia/Shanghai",
            "site_ids": [world.site_a.id], "org_unit_ids": [world.branch_a.id]}
    body.update(kw)
    return body


def _times_have_offsets(obj) -> None:
    """Every value that looks like a time carries an offset."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
                assert OFFSET.match(value), f"{key}={value} has no offset"
            else:
                _times_have_offsets(value)
    elif isinstance(obj, list):
        for item in obj:
            _times_have_offsets(item)


@pytest.fixture
def admin_h(world, factory):
    return factory.headers(world.admin)


def test_create_and_list_occurrences(client, world, admin_h):
    r = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=3",
                                                   exdates=[]), headers=admin_h)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert isinstance(body["id"], int)
    assert body["occurrence_count"] == 3
    _times_have_offsets(body)
    r = client.get(f"/api/v1/sessions/{body['id']}/occurrences", headers=admin_h)
    assert r.status_code == 200
    occ = r.get_json()
    assert len(occ) == 3
    for row in occ:
        assert {"id", "starts_at", "ends_at", "status"} <= set(row)
        assert row["status"] == "scheduled"
    _times_have_offsets(occ)
    # from/to narrow the list (a "+" sent unescaped in the query is read as meant).
    start = occ[1]["starts_at"]
    r = client.get(f"/api/v1/sessions/{body['id']}/occurrences?from={start}", headers=admin_h)
    assert [o["id"] for o in r.get_json()] == [occ[1]["id"], occ[2]["id"]]
    # Paginated occurrence list with the X-Pagination header.
    r = client.get("/api/v1/occurrences?page_size=2", headers=admin_h)
    assert r.status_code == 200
    assert len(r.get_json()) == 2
    assert '"total": 3' in r.headers["X-Pagination"]
    _times_have_offsets(r.get_json())


def test_session_get_patch_delete(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=2"),
                      headers=admin_h).get_json()["id"]
    r = client.get(f"/api/v1/sessions/{sid}", headers=admin_h)
    assert r.status_code == 200
    assert r.get_json()["rrule"] == "FREQ=WEEKLY;COUNT=2"
    seq = r.get_json()["sequence"]
    r = client.patch(f"/api/v1/sessions/{sid}",
                     json={"title": "新标题", "rrule": "FREQ=WEEKLY;COUNT=4"}, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["title"] == "新标题"
    assert r.get_json()["occurrence_count"] == 4
    assert r.get_json()["sequence"] > seq
    assert client.get("/api/v1/sessions", headers=admin_h).get_json()[0]["id"] == sid
    assert client.delete(f"/api/v1/sessions/{sid}", headers=admin_h).status_code == 204
    assert client.get(f"/api/v1/sessions/{sid}", headers=admin_h).status_code == 404


def test_patch_occurrence_move_cancel_restore(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=DAILY;COUNT=3"),
                      headers=admin_h).get_json()["id"]
    occ = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()
    target = occ[1]
    new_start = _future(days=20, hour=8)
    r = client.patch(f"/api/v1/occurrences/{target['id']}", json={"starts_at": new_start},
                     headers=admin_h)
    assert r.status_code == 200, r.get_json()
    moved = r.get_json()
    assert moved["id"] == target["id"]
    assert dt.datetime.fromisoformat(moved["starts_at"]) == dt.datetime.fromisoformat(new_start)
    assert moved["original_start"] == target["starts_at"]
    r = client.patch(f"/api/v1/occurrences/{occ[2]['id']}", json={"status": "cancelled"},
                     headers=admin_h)
    assert r.get_json()["status"] == "cancelled"
    listed = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()
    assert [o["id"] for o in listed] == [occ[0]["id"], occ[2]["id"], target["id"]]
    assert [o["status"] for o in listed] == ["scheduled", "cancelled", "scheduled"]
    r = client.patch(f"/api/v1/occurrences/{occ[2]['id']}", json={"status": "scheduled"},
                     headers=admin_h)
    assert r.get_json()["status"] == "scheduled"
    r = client.get(f"/api/v1/occurrences/{target['id']}", headers=admin_h)
    assert r.status_code == 200
    assert r.get_json()["title"] == "党史讲座"


@pytest.mark.parametrize(("patch", "field"), [
    ({"starts_at": "2026-13-01T10:00:00+08:00"}, "starts_at"),
    ({"starts_at": "2026-03-04T19:30:00"}, "starts_at"),
    ({"starts_at": "tomorrow"}, "starts_at"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "China Standard Time"}, "timezone"),
    ({"rrule": "FREQ=SECONDLY"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;COUNT=2;UNTIL=20300101T000000Z"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=QQ"}, "rrule"),
    ({"site_ids": [999999]}, "site_ids"),
    ({"org_unit_ids": [999999], "site_ids": []}, "org_unit_ids"),
    ({"site_ids": [], "org_unit_ids": []}, "site_ids"),
    ({"duration_minutes": 0}, "duration_minutes"),
    ({"duration_minutes": 2000}, "duration_minutes"),
    ({"duration_minutes": "ninety"}, "duration_minutes"),
    ({"kind": "party"}, "kind"),
    ({"title": ""}, "title"),
    ({"trainer_id": 999999}, "trainer_id"),
    ({"exdates": ["2026-03-04"]}, "exdates"),
    ({"exdates": ["2026-03-04T19:30:00"]}, "exdates"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_input_names_the_field(client, world, admin_h, patch, field):
    r = client.post("/api/v1/sessions", json=_body(world, **patch), headers=admin_h)
    assert r.status_code in (400, 422), r.get_json()
    body = r.get_json()
    assert set(body) == {"error", "message", "details"}
    assert body["details"]["field"] == field, body


def test_trainer_id_must_be_a_trainer(client, world, admin_h):
    r = client.post("/api/v1/sessions", json=_body(world, trainer_id=world.member.id),
                    headers=admin_h)
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "trainer_id"


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-03-01T00:00:00",
                                   "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z"])
def test_bad_ranges_name_the_field(client, world, admin_h, query):
    r = client.get(f"/api/v1/occurrences?{query}", headers=admin_h)
    assert r.status_code in (400, 422)
    assert r.get_json()["details"]["field"] in ("from", "to")


def test_bad_occurrence_patch(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world), headers=admin_h).get_json()["id"]
    oid = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()[0]["id"]
    for payload, field in (({"status": "gone"}, "status"),
                           ({"starts_at": "2026-03-01"}, "starts_at"), ({}, "starts_at")):
        r = client.patch(f"/api/v1/occurrences/{oid}", json=payload, headers=admin_h)
        assert r.status_code in (400, 422)
        assert r.get_json()["details"]["field"] == field
    assert client.patch("/api/v1/occurrences/999999", json={"status": "cancelled"},
                        headers=admin_h).status_code == 404


# --- conflicts -----------------------------------------------------------------------------------


def test_site_conflict_is_409_naming_the_clash(client, world, admin_h):
    first = client.post("/api/v1/sessions", json=_body(world, trainer_id=None),
                        headers=admin_h).get_json()
    clash = _body(world, title="支部大会", trainer_id=world.trainer2.id,
                  starts_at=_future(hour=20), org_unit_ids=[])
    r = client.post("/api/v1/sessions", json=clash, headers=admin_h)
    assert r.status_code == 409
    body = r.get_json()
    conflict = body["details"]["conflict"]
    assert conflict["kind"] == "site"
    assert conflict["site_id"] == world.site_a.id
    assert conflict["session_title"] == "党史讲座"
    occ_id = client.get(f"/api/v1/sessions/{first['id']}/occurrences",
                        headers=admin_h).get_json()[0]["id"]
    assert conflict["occurrence_id"] == occ_id
    assert f"#{occ_id}" in body["message"]
    assert "一号会议室" in body["message"]
    assert "党史讲座" in body["message"]
    assert OFFSET.match(conflict["starts_at"])
    # Back to back is fine; the other site is fine.
    ok = client.post("/api/v1/sessions", json={**clash, "starts_at": _future(hour=21)},
                     headers=admin_h)
    assert ok.status_code == 201
    ok = client.post("/api/v1/sessions", json={**clash, "site_ids": [world.site_b.id],
                                               "trainer_id": None}, headers=admin_h)
    assert ok.status_code == 201


def test_trainer_conflict_and_cancelled_do_not_clash(client, world, admin_h):
    first = client.post("/api/v1/sessions", json=_body(world), headers=admin_h).get_json()
    other = _body(world, title="党课", site_ids=[world.site_b.id], org_unit_ids=[],
                  starts_at=_future(hour=20))
    r = client.post("/api/v1/sessions", json=other, headers=admin_h)
    assert r.status_code == 409
    conflict = r.get_json()["details"]["conflict"]
    assert conflict["kind"] == "trainer"
    assert conflict["trainer_id"] == world.trainer.id
    assert "trainer" in r.get_json()["message"]  # the trainer's display name
    occ = client.get(f"/api/v1/sessions/{first['id']}/occurrences", headers=admin_h).get_json()
    client.patch(f"/api/v1/occurrences/{occ[0]['id']}", json={"status": "cancelled"},
                 headers=admin_h)
    r = client.post("/api/v1/sessions", json=other, headers=admin_h)
    assert r.status_code == 201
    # Restoring the cancelled one now clashes and is refused.
    r = client.patch(f"/api/v1/occurrences/{occ[0]['id']}", json={"status": "scheduled"},
                     headers=admin_h)
    assert r.status_code == 409


def test_moving_onto_a_booked_slot_is_refused(client, world, admin_h):
    client.post("/api/v1/sessions", json=_body(world, trainer_id=None), headers=admin_h)
    sid = client.post("/api/v1/sessions", json=_body(world, trainer_id=None, title="B",
                                                     starts_at=_future(days=8)),
                      headers=admin_h).get_json()["id"]
    oid = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()[0]["id"]
    r = client.patch(f"/api/v1/occurrences/{oid}", json={"starts_at": _future(hour=20)},
                     headers=admin_h)
    assert r.status_code == 409
    assert r.get_json()["details"]["conflict"]["session_title"] == "党史讲座"


def test_preview_shows_next_occurrences_and_conflicts(client, world, admin_h):
    client.post("/api/v1/sessions", json=_body(world), headers=admin_h)
    body = _body(world, rrule="FREQ=WEEKLY;COUNT=12", trainer_id=None, title="x")
    r = client.post("/api/v1/sessions/preview", json=body, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["total"] == 12
    assert len(out["occurrences"]) == 10
    assert out["conflicts"][0]["site_id"] == world.site_a.id
    assert "一号会议室" in out["conflicts"][0]["message"]
    r = client.post("/api/v1/sessions/preview", json={**body, "rrule": "FREQ=HOURLY"},
                    headers=admin_h)
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "rrule"


def test_preview_of_an_edit_says_which_booked_occurrences_it_drops_or_moves(
        client, world, admin_h, db_session):
    from sessions.models import Occurrence

    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=4"),
                      headers=admin_h).get_json()["id"]
    r = client.post("/api/v1/sessions/preview",
                    json={"session_id": sid, "rrule": "FREQ=WEEKLY;COUNT=2"}, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    changes = r.get_json()["changes"]
    assert len(changes["dropped"]) == 2
    assert changes["message"].startswith("将删除 2 个已排场次")
    # a new time of day moves the booked rows (same ids), and says so
    later = _future(hour=21)
    r = client.post("/api/v1/sessions/preview", json={"session_id": sid, "starts_at": later},
                    headers=admin_h)
    changes = r.get_json()["changes"]
    assert (len(changes["moved"]), changes["dropped"], changes["added"]) == (4, [], 0)
    assert "将改期 4 个场次" in changes["message"]
    # nothing was changed by the previews
    db_session.expire_all()
    assert db_session.query(Occurrence).filter_by(session_id=sid).count() == 4
    r = client.post("/api/v1/sessions/preview", json=_body(world, title="new"), headers=admin_h)
    assert r.get_json()["changes"] is None


# --- roles and scope ---------------------------------------------------------------------------


def test_who_may_create(client, world, factory):
    body = _body(world)
    for user, status in ((world.trainer, 403), (world.operator, 403), (world.member, 403)):
        r = client.post("/api/v1/sessions", json=body, headers=factory.headers(user))
        assert r.status_code == status, user.username
    # An organizer of branch A may not aim at branch B or its site.
    h = factory.headers(world.organizer)
    r = client.post("/api/v1/sessions", json=_body(world, site_ids=[world.site_b.id],
                                                   org_unit_ids=[]), headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/sessions", json=_body(world, site_ids=[],
                                                   org_unit_ids=[world.committee.id]), headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/sessions", json=body, headers=h)
    assert r.status_code == 201
    assert client.post("/api/v1/sessions", json=body).status_code == 401


def test_who_sees_what(client, world, factory, make_session):
    a = make_session(title="A 支部")
    b = make_session(title="B 支部", site_ids=[world.site_b.id], org_unit_ids=[world.branch_b.id],
                     trainer_id=world.trainer2.id)
    committee = make_session(title="全体", site_ids=[], org_unit_ids=[world.committee.id],
                             trainer_id=None, starts_at=a.starts_at + dt.timedelta(days=1))
    expected = {
        world.admin: {a.id, b.id, committee.id},
        world.organizer: {a.id},
        world.organizer_b: {b.id},
        world.trainer: {a.id},
        world.trainer2: {b.id},
        # A site under a targeted unit is targeted (sessions/targets.py): its operator sees
        # the committee's session he may watch and take the roll call of.
        world.operator: {a.id, committee.id},
        world.operator_b: {b.id, committee.id},
        world.member: {a.id, committee.id},
        world.member_b_user: {b.id, committee.id},
    }
    for user, ids in expected.items():
        h = factory.headers(user)
        listed = {s["id"] for s in client.get("/api/v1/sessions", headers=h).get_json()}
        assert listed == ids, user.username
        occ_sessions = {o["session_id"] for o in
                        client.get("/api/v1/occurrences", headers=h).get_json()}
        assert occ_sessions == ids, user.username
        for sid in (a.id, b.id):
            r = client.get(f"/api/v1/sessions/{sid}", headers=h)
            assert r.status_code == (200 if sid in ids else 403), (user.username, sid)
            r = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=h)
            assert r.status_code == (200 if sid in ids else 403), (user.username, sid)


def test_who_may_edit(client, world, factory, make_session):
    a = make_session()
    oid = a.occurrences[0].id
    for user in (world.organizer_b, world.trainer, world.operator, world.member):
        h = factory.headers(user)
        assert client.patch(f"/api/v1/sessions/{a.id}", json={"title": "x"},
                            headers=h).status_code == 403, user.username
        assert client.patch(f"/api/v1/occurrences/{oid}", json={"status": "cancelled"},
                            headers=h).status_code == 403, user.username
        assert client.delete(f"/api/v1/sessions/{a.id}", headers=h).status_code == 403
    h = factory.headers(world.organizer)
    assert client.patch(f"/api/v1/sessions/{a.id}", json={"title": "x"}, headers=h).status_code \
        == 200
    # ...but not re-aim it outside his subtree.
    r = client.patch(f"/api/v1/sessions/{a.id}", json={"site_ids": [world.site_b.id]}, headers=h)
    assert r.status_code == 403


def test_site_screen_token_reads_its_site(client, world, db_session, make_session):
    from accounts.service import issue_site_token

    a = make_session()
    make_session(title="B", site_ids=[world.site_b.id], org_unit_ids=[], trainer_id=None)
    token = issue_site_token(db_session, world.site_a)
    db_session.commit()
    h = {"Authorization": f"Bearer {token}"}
    assert {o["session_id"] for o in client.get("/api/v1/occurrences", headers=h).get_json()} \
        == {a.id}
    assert client.post("/api/v1/sessions", json=_body(world), headers=h).status_code == 403


def test_delete_refused_with_attendance(client, world, admin_h, make_session, db_session):
    from attendance.models import AttendanceEvent

    a = make_session()
    db_session.add(AttendanceEvent(occurrence_id=a.occurrences[0].id, type="check_in",
                                   source="t", event_id="1", member_id=world.member_a.id))
    db_session.commit()
    r = client.delete(f"/api/v1/sessions/{a.id}", headers=admin_h)
    assert r.status_code == 409


def test_openapi_documents_the_sessions_api(client):
    spec = client.get("/api/openapi.json").get_json()
    for path in ("/api/v1/sessions", "/api/v1/sessions/{session_id}/occurrences",
                 "/api/v1/occurrences/{occurrence_id}", "/api/v1/sessions/import"):
        assert path in spec["paths"]


def test_preview_changes_read_in_english(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=4"),
                      headers=admin_h).get_json()["id"]
    r = client.post("/api/v1/sessions/preview?lang=en",
                    json={"session_id": sid, "rrule": "FREQ=WEEKLY;COUNT=2"},
                    headers={**admin_h, "Accept-Language": "en"})
    message = r.get_json()["changes"]["message"]
    assert message.startswith("Will remove 2 booked occurrences")
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in message)
