"""The attendance API contract: records, exports, the event log, leave, corrections, lock."""

from __future__ import annotations

import datetime as dt
import io

import openpyxl
import pytest
from sqlalchemy import func, select

from attendance.models import AttendanceEvent
from core.types import utcnow

#: The scene's occurrence is live: locking it needs the explicit early flag.
EARLY = {"early": True, "reason": "测试：提前审核"}


def events_url(scene) -> str:
    return f"/api/v1/occurrences/{scene.occurrence.id}/attendance-events"


def body(scene, member=0, site=None, event_id="e1", type_="check_in", **extra):
    return {"event_id": event_id, "type": type_, "member_id": scene.members[member].id,
            "site_id": (site or scene.site_a).id, **extra}


def stored(db_session) -> int:
    db_session.expire_all()
    return db_session.scalar(select(func.count()).select_from(AttendanceEvent))


def test_post_event_201_then_repeat_200_with_the_stored_event(client, scene, db_session):
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers("operator_a"))
    assert r.status_code == 201, r.json
    first = r.json
    assert (first["event_id"], first["type"], first["source"]) == (
        "e1", "check_in", f"api:user:{scene.users['operator_a'].id}")
    # the repeat is recognised first: even with a different body
    r = client.post(events_url(scene), json={"event_id": "e1", "type": "bogus"},
                    headers=scene.headers("operator_a"))
    assert r.status_code == 200
    assert r.json["id"] == first["id"]
    assert stored(db_session) == 1


def test_repeat_is_recognised_even_after_the_occurrence_is_locked(client, scene, db_session):
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("screen_a")).status_code == 201
    assert client.post(f"/api/v1/occurrences/{scene.occurrence.id}/lock", json=EARLY,
                       headers=scene.headers("organizer")).status_code == 200
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers("screen_a"))
    assert r.status_code == 200
    r = client.post(events_url(scene), json=body(scene, member=1, event_id="e2"),
                    headers=scene.headers("screen_a"))
    assert r.status_code == 409
    assert r.json["error"] == "occurrence_locked"


def test_check_in_at_another_site_is_409_and_not_stored(client, scene, db_session):
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("admin")).status_code == 201
    r = client.post(events_url(scene), json=body(scene, site=scene.site_b, event_id="e2"),
                    headers=scene.headers("admin"))
    assert r.status_code == 409
    assert r.json["error"] == "checked_in_elsewhere"
    assert r.json["details"]["site_id"] == scene.site_a.id
    assert stored(db_session) == 1
    # after a check-out the member may check in elsewhere
    assert client.post(events_url(scene), json=body(scene, event_id="e3", type_="check_out"),
                       headers=scene.headers("admin")).status_code == 201
    assert client.post(events_url(scene), json=body(scene, site=scene.site_b, event_id="e4"),
                       headers=scene.headers("admin")).status_code == 201


@pytest.mark.parametrize(("field", "value"), [
    ("type", "viewer_join"), ("member_id", "x"), ("at", "yesterday"),
    ("at", "2024-07-01T10:00:00"),  # naive
])
def test_bad_body_is_422_naming_the_field(client, scene, db_session, field, value):
    r = client.post(events_url(scene), json=body(scene, **{field: value}),
                    headers=scene.headers("admin"))
    assert r.status_code == 422
    assert r.json["details"]["field"] == field
    assert stored(db_session) == 0


def test_missing_event_id_or_json_is_422(client, scene):
    r = client.post(events_url(scene), json={"type": "check_in"}, headers=scene.headers("admin"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "event_id")
    r = client.post(events_url(scene), data="nope", headers=scene.headers("admin"))
    assert r.status_code == 422


def test_a_facts_time_is_the_servers(client, scene, db_session):
    """A client's `at` is only checked (±2 min of the server's clock), never used."""
    future = (utcnow() + dt.timedelta(minutes=10)).isoformat()
    r = client.post(events_url(scene), json=body(scene, at=future), headers=scene.headers("admin"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "at")
    half_hour_ago = (utcnow() - dt.timedelta(minutes=30)).isoformat()
    r = client.post(events_url(scene), json=body(scene, at=half_hour_ago),
                    headers=scene.headers("operator_a"))
    assert (r.status_code, r.json["error"], r.json["details"]["field"]) == (
        422, "validation_error", "at")
    naive = utcnow().replace(tzinfo=None).isoformat()
    r = client.post(events_url(scene), json=body(scene, at=naive),
                    headers=scene.headers("operator_a"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "at")
    assert stored(db_session) == 0
    before = utcnow()
    near = (utcnow() - dt.timedelta(seconds=90)).isoformat()
    r = client.post(events_url(scene), json=body(scene, at=near),
                    headers=scene.headers("operator_a"))
    assert r.status_code == 201
    assert r.json["client_time"] is None  # stored at the server's time
    assert dt.datetime.fromisoformat(r.json["server_time"]) >= before.replace(microsecond=0)
    assert stored(db_session) == 1


def test_a_mark_queued_offline_keeps_its_time_within_the_occurrence(client, scene, db_session):
    """`queued: true` with an `at` inside the live occurrence: stored with that time and
    flagged 离线补传 in the records; without `at`, or outside the occurrence, 422."""
    at = (utcnow() - dt.timedelta(minutes=4)).replace(microsecond=0)
    r = client.post(events_url(scene), json=body(scene, at=at.isoformat(), queued=True,
                                                 clock_offset_ms=-1500),
                    headers=scene.headers("operator_a"))
    assert r.status_code == 201, r.json
    assert dt.datetime.fromisoformat(r.json["client_time"]) == at
    assert r.json["payload"] == {"queued": True, "clock_offset_ms": -1500}
    r = client.post(events_url(scene), json=body(scene, member=1, event_id="e2", queued=True),
                    headers=scene.headers("operator_a"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "at")
    long_before = (scene.occurrence.starts_at - dt.timedelta(minutes=45)).isoformat()
    r = client.post(events_url(scene), json=body(scene, member=1, event_id="e3",
                                                 at=long_before, queued=True),
                    headers=scene.headers("operator_a"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "at")
    rows = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance",
                      headers=scene.headers("organizer")).json
    row = next(x for x in rows if x["member_id"] == scene.members[0].id)
    assert row["status"] == "present"
    assert "离线补传" in row["notes"]
    assert row["first_join"] is not None
    assert dt.datetime.fromisoformat(row["first_join"]) == at


def test_a_queued_mark_for_an_occurrence_that_ended_days_ago_is_refused(
        client, scene, db_session):
    from tests.attendance.conftest import make_session

    start = utcnow().replace(microsecond=0) - dt.timedelta(days=5)
    _, old = make_session(db_session, title="五天前", start=start, minutes=60,
                          sites=[scene.site_a], units=[scene.unit])
    db_session.commit()
    url = f"/api/v1/occurrences/{old.id}/attendance-events"
    for type_, minute in (("check_in", 1), ("check_out", 59)):
        at = (start + dt.timedelta(minutes=minute)).isoformat()
        r = client.post(url, json=body(scene, at=at, queued=True, type_=type_,
                                       event_id=type_), headers=scene.headers("operator_a"))
        assert (r.status_code, r.json["details"]["field"]) == (422, "at")
    assert stored(db_session) == 0


@pytest.mark.parametrize("who", ["operator_b", "screen_b", "member0", "other_organizer",
                                 "trainer"])
def test_who_may_not_post_is_403(client, scene, db_session, who):
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers(who))
    assert r.status_code == 403
    assert stored(db_session) == 0


def test_foreign_occurrence_is_403_and_no_auth_401(client, scene, db_session):
    url = f"/api/v1/occurrences/{scene.foreign_occurrence.id}/attendance-events"
    assert client.post(url, json=body(scene), headers=scene.headers("operator_a")).status_code \
        == 403
    assert client.post(events_url(scene), json=body(scene)).status_code == 401
    r = client.post(events_url(scene), json=body(scene),
                    headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert stored(db_session) == 0


def test_unknown_occurrence_member_site_are_404(client, scene):
    r = client.post("/api/v1/occurrences/999/attendance-events", json=body(scene),
                    headers=scene.headers("admin"))
    assert r.status_code == 404
    r = client.post(events_url(scene), json={**body(scene), "member_id": 999},
                    headers=scene.headers("admin"))
    assert r.status_code == 404


def test_event_log_lists_event_ids(client, scene):
    for i in range(3):
        client.post(events_url(scene), json=body(scene, member=i % 2, event_id=f"k{i}",
                                                 type_="check_in" if i < 2 else "check_out"),
                    headers=scene.headers("screen_a"))
    r = client.get(events_url(scene), headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert [e["event_id"] for e in r.json] == ["k0", "k1", "k2"]
    assert "X-Pagination" in r.headers
    assert client.get(events_url(scene), headers=scene.headers("member0")).status_code == 403


def test_attendance_rows_one_per_expected_member(client, scene):
    client.post(events_url(scene), json=body(scene), headers=scene.headers("screen_a"))
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance",
                   headers=scene.headers("organizer"))
    assert r.status_code == 200
    rows = {row["member_id"]: row for row in r.json}
    assert set(rows) == {m.id for m in scene.members}
    first = rows[scene.members[0].id]
    assert first["status"] == "present"
    assert first["site_id"] == scene.site_a.id
    assert first["site_name"] == "一号会议室"
    assert first["first_join"] is not None
    assert first["minutes"] >= 0
    # live: nobody is absent before the end; not yet here is 未到
    assert rows[scene.members[2].id]["status"] == "not_arrived"
    assert client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance",
                      headers=scene.headers("other_organizer")).status_code == 403


def test_xlsx_and_csv_exports(client, scene):
    client.post(events_url(scene), json=body(scene), headers=scene.headers("screen_a"))
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.xlsx",
                   headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert r.mimetype.endswith("spreadsheetml.sheet")
    from urllib.parse import quote

    disposition = r.headers["Content-Disposition"]
    local = scene.occurrence.starts_at.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert f"filename*=UTF-8''{quote(f'党史学习-{local:%Y-%m-%d}-考勤.xlsx')}" in disposition
    assert 'filename="' in disposition  # an ASCII fallback for old clients
    wb = openpyxl.load_workbook(io.BytesIO(r.data))
    ws = wb["考勤明细"]
    rows = list(ws.values)
    # a title row, the lesson's facts, then the headers (repeated on every printed page)
    assert rows[0][0] == "党史学习 考勤表"
    assert rows[1][0].startswith(f"日期：{local:%Y-%m-%d}")
    assert "讲师：trainer" in rows[1][0]
    assert "一号会议室、二号会议室" in rows[1][0]
    assert rows[2] == ("姓名", "党员编号", "所在支部", "学习点", "首次签到", "最后签退",
                       "时长(分钟)", "状态", "备注")
    assert ws.print_title_rows == "$3:$3"
    assert ws.page_setup.orientation == "landscape"
    assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0)
    assert ws.sheet_properties.pageSetUpPr.fitToPage is True
    rows = rows[2:]
    assert len(rows) == 5
    zhang = next(r for r in rows if r[0] == "张三")
    assert zhang[3] == "一号会议室"
    assert isinstance(zhang[4], dt.datetime)  # a real Excel datetime, in Beijing time
    expected_local = scene.occurrence.starts_at  # checked in after the start
    assert zhang[4] > expected_local.astimezone(dt.timezone(dt.timedelta(hours=8))).replace(
        tzinfo=None)
    assert zhang[7] == "出席"
    assert "学习点汇总" in wb.sheetnames
    totals = list(wb["学习点汇总"].values)[-1]
    assert totals[:3] == ("合计", 4, 1)
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.csv",
                   headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert r.data.startswith(b"\xef\xbb\xbf")
    text = r.data.decode("utf-8-sig")
    header = "姓名,党员编号,所在支部,学习点,首次签到,最后签退,时长(分钟),状态,备注"
    assert text.splitlines()[0] == header
    assert len(text.strip().splitlines()) == 5


def test_leave_request_approved_makes_excused(client, scene):
    occ = scene.occurrence.id
    r = client.post(f"/api/v1/occurrences/{occ}/leave-requests",
                    json={"member_id": scene.members[0].id, "reason": "出差"},
                    headers=scene.headers("member0"))
    assert r.status_code == 201
    leave_id = r.json["id"]
    r = client.post(f"/api/v1/occurrences/{occ}/leave-requests",
                    json={"member_id": scene.members[1].id, "reason": "代请"},
                    headers=scene.headers("member0"))
    assert r.status_code == 403
    assert client.post(f"/api/v1/leave-requests/{leave_id}/approve",
                       headers=scene.headers("member0")).status_code == 403
    r = client.post(f"/api/v1/leave-requests/{leave_id}/approve",
                    headers=scene.headers("organizer"))
    assert (r.status_code, r.json["status"]) == (200, "approved")
    rows = client.get(f"/api/v1/occurrences/{occ}/attendance",
                      headers=scene.headers("organizer")).json
    assert next(x for x in rows if x["member_id"] == scene.members[0].id)["status"] == "excused"


def test_corrections_need_a_reason_are_audited_and_lock_stops_them(client, scene):
    occ = scene.occurrence.id
    url = f"/api/v1/occurrences/{occ}/corrections"
    member = scene.members[2].id
    r = client.post(url, json={"member_id": member, "status": "present", "reason": ""},
                    headers=scene.headers("organizer"))
    assert r.status_code == 422
    r = client.post(url, json={"member_id": member, "status": "present", "minutes": 50,
                               "reason": "签到机故障"}, headers=scene.headers("organizer"))
    assert r.status_code == 201
    assert r.json["before"] == {"status": "not_arrived", "minutes": 0.0}
    assert r.json["after"] == {"status": "present", "minutes": 50.0}
    assert r.json["corrected_by_id"] == scene.users["organizer"].id
    assert client.post(url, json={"member_id": member, "status": "present", "reason": "x"},
                       headers=scene.headers("operator_a")).status_code == 403
    rows = client.get(f"/api/v1/occurrences/{occ}/attendance",
                      headers=scene.headers("organizer")).json
    row = next(x for x in rows if x["member_id"] == member)
    assert (row["status"], row["minutes"], row["corrected"]) == ("present", 50.0, True)
    assert "签到机故障" in row["notes"]
    audit = client.get(url, headers=scene.headers("organizer")).json
    assert len(audit) == 1
    # lock: corrections refused; only an admin unlocks
    assert client.post(f"/api/v1/occurrences/{occ}/lock", json=EARLY,
                       headers=scene.headers("organizer")).json["locked"] is True
    r = client.post(url, json={"member_id": member, "status": "absent", "reason": "再改"},
                    headers=scene.headers("organizer"))
    assert r.status_code == 409
    assert client.post(f"/api/v1/occurrences/{occ}/unlock",
                       headers=scene.headers("organizer")).status_code == 403
    assert client.post(f"/api/v1/occurrences/{occ}/unlock",
                       headers=scene.headers("admin")).json["locked"] is False
    assert client.post(url, json={"member_id": member, "status": "absent", "reason": "再改"},
                       headers=scene.headers("organizer")).status_code == 201


def test_openapi_documents_the_contract(client):
    spec = client.get("/api/openapi.json").json
    post = spec["paths"]["/api/v1/occurrences/{occurrence_id}/attendance-events"]["post"]
    assert {"200", "201"} <= set(post["responses"])


def test_locking_before_the_end_needs_an_explicit_early_lock_with_a_reason(
        client, scene, db_session):
    url = f"/api/v1/occurrences/{scene.occurrence.id}/lock"
    r = client.post(url, headers=scene.headers("organizer"))
    assert (r.status_code, r.json["error"]) == (409, "not_ended")
    assert "ends_at" in r.json["details"]
    r = client.post(url, json={"early": True}, headers=scene.headers("organizer"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "reason")
    r = client.post(url, json={"early": "yes", "reason": "x"}, headers=scene.headers("organizer"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "early")
    assert client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance",
                      headers=scene.headers("organizer")).status_code == 200
    r = client.post(url, json=EARLY, headers=scene.headers("organizer"))
    assert r.json["locked"] is True
    db_session.expire_all()
    [locked] = db_session.scalars(select(AttendanceEvent).where(
        AttendanceEvent.type == "locked")).all()
    assert locked.payload == {"early": True, "reason": EARLY["reason"]}
    assert locked.actor_user_id == scene.users["organizer"].id


def test_an_ended_occurrence_locks_without_a_flag_and_early_lock_freezes_records(
        client, scene, db_session):
    from tests.attendance.conftest import make_session

    start = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
    _, past = make_session(db_session, title="已结束", start=start, minutes=60,
                           sites=[scene.site_a], units=[scene.unit])
    db_session.commit()
    r = client.post(f"/api/v1/occurrences/{past.id}/lock", headers=scene.headers("organizer"))
    assert (r.status_code, r.json["locked"]) == (200, True)
    # A live one, locked early: nothing after the lock counts.
    occ = scene.occurrence.id
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("operator_a")).status_code == 201
    client.post(f"/api/v1/occurrences/{occ}/lock", json=EARLY,
                headers=scene.headers("organizer"))
    first = client.get(f"/api/v1/occurrences/{occ}/attendance",
                       headers=scene.headers("organizer")).json
    import time

    time.sleep(1.2)
    second = client.get(f"/api/v1/occurrences/{occ}/attendance",
                        headers=scene.headers("organizer")).json
    assert [r["minutes"] for r in first] == [r["minutes"] for r in second]
    row = next(r for r in second if r["member_id"] == scene.members[0].id)
    assert row["last_leave"] is not None  # closed at the lock, not running on


def test_counters_records_exports_and_dashboard_come_from_one_derivation(
        client, scene, db_session, app):
    """One log, with a check-in, an approved leave and a correction: the live snapshot's
    counts, the API records, the csv and the dashboard page all say the same."""
    import csv

    from attendance import service

    occ = scene.occurrence.id
    org = scene.headers("organizer")
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("operator_a")).status_code == 201
    leave = client.post(f"/api/v1/occurrences/{occ}/leave-requests",
                        json={"member_id": scene.members[1].id, "reason": "出差"}, headers=org)
    assert leave.status_code == 201, leave.json
    assert client.post(f"/api/v1/leave-requests/{leave.json['id']}/approve",
                       headers=org).status_code == 200
    assert client.post(f"/api/v1/occurrences/{occ}/corrections",
                       json={"member_id": scene.members[2].id, "status": "present",
                             "reason": "签到机故障，现场确认"}, headers=org).status_code == 201
    rows = {r["member_id"]: r["status"] for r in client.get(
        f"/api/v1/occurrences/{occ}/attendance", headers=org).json}
    assert rows == {scene.members[0].id: "present", scene.members[1].id: "excused",
                    scene.members[2].id: "present", scene.members[3].id: "not_arrived"}
    occurrence = service.get_occurrence(db_session, occ)
    snap = service.snapshot(db_session, occurrence, config=app.config, now=utcnow())
    assert (snap["attended_count"], snap["excused_count"], snap["present_count"]) == (2, 1, 1)
    assert {int(k): v for k, v in snap["statuses"].items()} == rows
    sheet = client.get(f"/api/v1/occurrences/{occ}/attendance.csv", headers=org)
    table = list(csv.reader(io.StringIO(sheet.data.decode("utf-8-sig"))))
    labels = {"present": "出席", "excused": "请假", "not_arrived": "未到"}
    by_name = {r[0]: r for r in table[1:]}
    for member in scene.members:
        assert labels[rows[member.id]] in by_name[member.name]
    # the dashboard names the members and the organizer in its audit tables
    client.post("/login", data={"username": "organizer", "password": "password123"})
    html = client.get(f"/attendance/{occ}").get_data(as_text=True)
    assert "王五（" in html  # corrected, by name
    assert "李四（" in html  # on leave, by name


def test_exports_read_back_by_a_second_reader(client, scene):
    """python-calamine (Rust's calamine, as WPS-like readers parse) reads the same sheets
    openpyxl wrote: titles, headers, hostile names as text, the summary."""
    from python_calamine import CalamineWorkbook

    body_ = body(scene)
    client.post(events_url(scene), json=body_, headers=scene.headers("screen_a"))
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.xlsx",
                   headers=scene.headers("organizer"))
    book = CalamineWorkbook.from_filelike(io.BytesIO(r.data))
    assert book.sheet_names == ["考勤明细", "学习点汇总"]
    rows = book.get_sheet_by_name("考勤明细").to_python()
    assert rows[0][0] == "党史学习 考勤表"
    assert rows[2][:2] == ["姓名", "党员编号"]
    assert {row[0] for row in rows[3:]} == {"张三", "李四", "王五", "赵六"}
    summary = book.get_sheet_by_name("学习点汇总").to_python()
    assert summary[-1][0] == "合计"
