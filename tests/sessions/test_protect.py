"""Attended occurrences are never deleted: the service refuses with 409, and the database
refuses too (attendance_events.occurrence_id is ON DELETE RESTRICT)."""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, inspect, select

from app import create_app
from attendance.models import AttendanceEvent
from attendance.reactions import keep_attended_occurrences
from extensions import db
from sessions import service
from sessions.errors import Conflict
from sessions.models import Occurrence, StudySession
from sessions.signals import occurrences_deleting
from tests.sessions.conftest import NOW
from tests.test_app import empty_database_url  # noqa: F401  (fixture)

SH = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def admin_h(world, factory):
    return factory.headers(world.admin)


@contextmanager
def guard_missing():
    """The scheduling side's guard answering "nothing attended" (a receiver lost): only
    the database stands between a delete and the event log."""
    occurrences_deleting.disconnect(keep_attended_occurrences)
    try:
        yield
    finally:
        occurrences_deleting.connect(keep_attended_occurrences)


def _attend(db_session, occurrence, member, event_id="e1"):
    db_session.add(AttendanceEvent(occurrence_id=occurrence.id, member_id=member.id,
                                   type="check_in", source="test", event_id=event_id))
    db_session.commit()


def _events(db_session, occurrence_id) -> int:
    return db_session.scalar(select(func.count()).select_from(AttendanceEvent)
                             .where(AttendanceEvent.occurrence_id == occurrence_id))


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


def test_series_edit_that_would_drop_an_attended_occurrence_keeps_it(make_session, db_session,
                                                                     world):
    study = make_session(starts_at=dt.datetime(2026, 3, 4, 19, 30, tzinfo=SH),
                         rrule="FREQ=WEEKLY;BYDAY=WE;COUNT=4")
    attended = study.occurrences[3]  # 3/25
    _attend(db_session, attended, world.member_a)
    # The new rule has two instances: 3/25 is no longer one of them.
    service.update_session(db_session, world.admin, study, {"rrule": "FREQ=WEEKLY;COUNT=2"},
                           now=NOW)
    db_session.commit()
    db_session.expire_all()
    assert db_session.get(Occurrence, attended.id) is not None
    assert _events(db_session, attended.id) == 1


def test_series_edit_without_the_guard_is_refused_by_the_database(make_session, db_session,
                                                                  world):
    study = make_session(starts_at=dt.datetime(2026, 3, 4, 19, 30, tzinfo=SH),
                         rrule="FREQ=WEEKLY;BYDAY=WE;COUNT=4")
    attended = study.occurrences[3]
    _attend(db_session, attended, world.member_a)
    with guard_missing(), pytest.raises(Conflict) as refused:
        service.update_session(db_session, world.admin, study,
                               {"rrule": "FREQ=WEEKLY;COUNT=2"}, now=NOW)
    assert refused.value.code == "has_attendance"
    assert refused.value.status == 409
    assert refused.value.details["referenced_by"] == ["attendance_events"]
    # Only the savepoint was rolled back: the caller's transaction still answers queries
    # (the view then rolls the edit back).
    assert _events(db_session, attended.id) == 1
    db_session.rollback()
    db_session.expire_all()
    assert db_session.get(Occurrence, attended.id) is not None
    assert _events(db_session, attended.id) == 1
    assert len(db_session.get(StudySession, study.id).occurrences) == 4


def _occurrence_fk(engine) -> dict:
    fks = inspect(engine).get_foreign_keys("attendance_events")
    return next(fk for fk in fks if fk["constrained_columns"] == ["occurrence_id"])


def test_migration_makes_the_key_restrict_and_back(app_config, empty_database_url):  # noqa: F811
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": empty_database_url})
    directory = app.extensions["migrate"].directory
    with app.app_context():
        upgrade(directory=directory, revision="a758866c380e")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "CASCADE"
        upgrade(directory=directory, revision="b1c4e7d2a9f3")
        fk = _occurrence_fk(db.engine)
        assert fk["options"].get("ondelete") == "RESTRICT"
        assert fk["name"] == "fk_attendance_events_occurrence_id"
        downgrade(directory=directory, revision="a758866c380e")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "CASCADE"
        upgrade(directory=directory, revision="b1c4e7d2a9f3")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "RESTRICT"
        db.engine.dispose()
