"""Occurrences from a rule: a series edit keeps attended occurrences (sessions/materialize.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from sessions import service
from sessions.errors import Conflict
from sessions.models import Occurrence, StudySession
from tests.sessions.conftest import NOW, SH, _attend, _events, guard_missing


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
