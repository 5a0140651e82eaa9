"""Leave, corrections and locks (an early lock needs a reason) (attendance/review.py)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from attendance.models import AttendanceEvent
from core.types import utcnow
from tests.attendance.conftest import EARLY, body, events_url


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
