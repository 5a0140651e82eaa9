"""Fixtures for the sessions tests: a small organization with a user of every role."""

from __future__ import annotations

import datetime as dt
import re
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from attendance.models import AttendanceEvent
from attendance.reactions import keep_attended_occurrences
from core.types import utcnow
from sessions import service
from sessions.signals import occurrences_deleting

UTC = dt.UTC
#: A fixed "now" for service tests: Monday 2026-03-02 00:00 UTC.
NOW = dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


_HASH: list[str] = []


def quick_user(db_session, role: str, username: str, **scope):
    """A user row with one shared password hash ("password123"): hashing per user is slow."""
    from werkzeug.security import generate_password_hash

    from accounts.models import User

    if not _HASH:
        _HASH.append(generate_password_hash("password123"))
    user = User(username=username, password_hash=_HASH[0], role=role, display_name=username,
                **scope)
    db_session.add(user)
    db_session.flush()
    return user


@pytest.fixture
def world(factory, db_session):
    """Committee -> branches A and B; a site in each; users of every role; committed."""
    committee = factory.org_unit("党委", kind="committee")
    branch_a = factory.org_unit("第一支部", parent=committee)
    branch_b = factory.org_unit("第二支部", parent=committee)
    site_a = factory.site(branch_a, "一号会议室")
    site_b = factory.site(branch_b, "二号会议室")
    member_a = factory.member(branch_a, site_a, name="张三")
    member_b = factory.member(branch_b, site_b, name="李四")
    w = SimpleNamespace(
        committee=committee, branch_a=branch_a, branch_b=branch_b, site_a=site_a,
        site_b=site_b, member_a=member_a, member_b=member_b,
        admin=quick_user(db_session, "admin", "admin"),
        organizer=quick_user(db_session, "organizer", "org_a", org_unit_id=branch_a.id),
        organizer_b=quick_user(db_session, "organizer", "org_b", org_unit_id=branch_b.id),
        trainer=quick_user(db_session, "trainer", "trainer"),
        trainer2=quick_user(db_session, "trainer", "trainer2"),
        operator=quick_user(db_session, "site_operator", "op_a", site_id=site_a.id),
        operator_b=quick_user(db_session, "site_operator", "op_b", site_id=site_b.id),
        member=quick_user(db_session, "member", "m_a", member_id=member_a.id),
        member_b_user=quick_user(db_session, "member", "m_b", member_id=member_b.id),
    )
    db_session.commit()
    return w


@pytest.fixture
def make_session(world, db_session):
    """Create a session through the service (admin), with sensible defaults."""

    def make(actor=None, now=NOW, **data):
        values = {
            "title": "党史讲座", "kind": "party_history_lecture", "trainer_id": world.trainer.id,
            "starts_at": dt.datetime(2026, 3, 4, 19, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
            "duration_minutes": 90, "timezone": "Asia/Shanghai",
            "site_ids": [world.site_a.id], "org_unit_ids": [world.branch_a.id],
        }
        values.update(data)
        study = service.create_session(db_session, actor or world.admin, values, now=now)
        db_session.commit()
        return study

    return make


# Shared by the sessions tests: API bodies, and the attended-occurrence guard.
OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)$")
#: China Standard Time as a fixed offset.
SH = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def admin_h(world, factory):
    return factory.headers(world.admin)


def _future(days=7, hour=19, minute=30) -> str:
    day = (utcnow() + dt.timedelta(days=days)).date()
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00"


def _body(world, **kw) -> dict:
    body = {"title": "党史讲座", "kind": "party_history_lecture", "trainer_id": world.trainer.id,
            "starts_at": _future(), "duration_minutes": 90, "timezone": "Asia/Shanghai",
            "site_ids": [world.site_a.id], "org_unit_ids": [world.branch_a.id]}
    body.update(kw)
    return body


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
