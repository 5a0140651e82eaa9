"""A caller waiting for the writer holds no pooled connection (a pool of one here)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attendance.writer import Append, Request, Task, writer_for
from core.types import utcnow
from extensions import db
from org.models import Member


@pytest.fixture
def app_config(app_config):
    """One pooled connection, and a short wait for it: a caller that kept its
    connection while waiting would leave the writer none."""
    app_config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 1, "max_overflow": 0,
                                               "pool_timeout": 1}
    return app_config


def _read_something() -> None:
    """A handler's read: its session now holds the pool's one connection."""
    db.session.execute(select(Member.id).limit(1)).all()
    assert db.session().in_transaction()


def test_an_append_is_stored_while_its_caller_had_read_the_database(app, scene):
    m = scene.members[0]
    _read_something()
    [(event, created)] = writer_for(app).append(Request([Append(
        occurrence_id=scene.occurrence.id, type="check_in", source=f"site:{scene.site_a.id}",
        event_id="pool-1", member_id=m.id, site_id=scene.site_a.id)], utcnow()), timeout=10)
    assert created
    assert event.member_id == m.id
    # the caller's rows reload on their next read
    assert m.name


def test_a_task_runs_while_its_caller_had_read_the_database(app, scene):
    member_id, name = scene.members[1].id, scene.members[1].name
    _read_something()
    got = writer_for(app).run(Task(lambda session, now: session.scalar(
        select(Member.name).where(Member.id == member_id)), utcnow()), timeout=10)
    assert got == name


def test_a_caller_with_changes_of_its_own_keeps_its_transaction(app, scene):
    from attendance.writer import idle_callers_session

    m = scene.members[2]
    m.name = "改名未提交"
    session = db.session()
    before = session.get_transaction()
    idle_callers_session()
    assert session.get_transaction() is before
    assert m in session.dirty
    db.session.rollback()
    _read_something()
    idle_callers_session()  # a read only: its transaction ends
    assert not session.in_transaction()
