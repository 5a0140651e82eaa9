"""Deleting occurrences asks attendance through sessions.signals.occurrences_deleting: attended
occurrences are kept (a re-sync) or the delete is refused with 409 (sessions/signals.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from attendance.models import AttendanceEvent
from sessions.models import Occurrence, StudySession
from tests.sessions.conftest import SH, _attend, _events, guard_missing


def test_delete_refused_with_attendance(client, world, admin_h, make_session, db_session):

    a = make_session()
    db_session.add(AttendanceEvent(occurrence_id=a.occurrences[0].id, type="check_in",
                                   source="t", event_id="1", member_id=world.member_a.id))
    db_session.commit()
    r = client.delete(f"/api/v1/sessions/{a.id}", headers=admin_h)
    assert r.status_code == 409


@pytest.mark.parametrize("guard", [True, False], ids=["service-guard", "database-restrict"])
def test_delete_of_an_attended_session_is_409_and_deletes_nothing(
        client, world, admin_h, make_session, db_session, guard):
    study = make_session(starts_at=dt.datetime(2026, 3, 4, 19, 30, tzinfo=SH),
                         rrule="FREQ=WEEKLY;BYDAY=WE;COUNT=3")
    attended = study.occurrences[1]
    _attend(db_session, attended, world.member_a)
    sid, occ_ids = study.id, [o.id for o in study.occurrences]
    if guard:
        r = client.delete(f"/api/v1/sessions/{sid}", headers=admin_h)
    else:
        with guard_missing():
            r = client.delete(f"/api/v1/sessions/{sid}", headers=admin_h)
    assert r.status_code == 409
    body = r.get_json()
    assert body["error"] == "has_attendance"
    assert "考勤" in body["message"]
    assert body["details"]["session_id"] == sid
    if guard:
        assert body["details"]["occurrence_ids"] == [attended.id]
    else:
        assert body["details"]["referenced_by"] == ["attendance_events"]
    db_session.expire_all()
    assert db_session.get(StudySession, sid) is not None
    assert sorted(db_session.scalars(select(Occurrence.id).where(
        Occurrence.session_id == sid))) == sorted(occ_ids)
    assert _events(db_session, attended.id) == 1


def test_delete_of_an_unattended_session_still_works(client, world, admin_h, make_session,
                                                     db_session):
    study = make_session()
    sid = study.id
    assert client.delete(f"/api/v1/sessions/{sid}", headers=admin_h).status_code == 204
    db_session.expire_all()
    assert db_session.get(StudySession, sid) is None
