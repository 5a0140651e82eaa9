"""Counters, records, rows and snapshots: one derivation (attendance/records.py)."""

from __future__ import annotations

import io

from config import settings
from core.types import utcnow
from tests.attendance.conftest import body, events_url


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
    snap = service.snapshot(db_session, occurrence, config=settings(app), now=utcnow())
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
