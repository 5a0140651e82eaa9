"""The event log: a fact's time is the server's, a mark queued offline keeps its own within
bounds, a repeat returns the stored event (attendance/log.py)."""

from __future__ import annotations

import datetime as dt

from attendance import service as svc
from attendance.models import AttendanceEvent
from core.types import utcnow
from tests.attendance.conftest import body, events_url, stored


def test_a_concurrent_duplicate_returns_the_stored_event(db_session, scene):
    now = utcnow()
    kw = {"occurrence": scene.occurrence, "type": "check_in", "source": "site:1",
          "event_id": "dup", "now": now, "member_id": scene.members[0].id,
          "site_id": scene.site_a.id}
    first, created = svc.record_event(db_session, **kw)
    assert created
    db_session.commit()
    # simulate the race: the lookup missed, the insert hits the unique constraint
    clash = AttendanceEvent(occurrence_id=scene.occurrence.id, source="site:1", event_id="dup",
                            type="check_in", member_id=scene.members[0].id, server_time=now,
                            payload={})
    stored, created = svc._insert(db_session, clash)
    assert (stored.id, created) == (first.id, False)


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
