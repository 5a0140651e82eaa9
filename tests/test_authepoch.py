"""Cached rights on long connections hold until what they rest on changes (core/authepoch.py):
no re-check while nothing changed, a re-check at once when something did, across
processes through Redis, and the short TTL while Redis cannot be read."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from core import authepoch
from core.types import utcnow
from tests.attendance.conftest import make_session

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def shared_key():
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the service is part of this machine; CI starts it
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    key = f"yuanjiao-test:{uuid.uuid4().hex}:auth-epoch"
    yield key
    redis.Redis.from_url(REDIS_URL).delete(key)


def test_a_local_epoch_moves_with_each_change():
    epoch = authepoch.Epoch()
    before = epoch.current()
    assert epoch.current() == before
    epoch.move()
    assert epoch.current() != before


def test_a_move_in_one_process_is_seen_by_another_through_redis(shared_key):
    one, two = authepoch.Epoch(REDIS_URL, shared_key), authepoch.Epoch(REDIS_URL, shared_key)
    seen = two.current()
    assert seen is not None
    one.move()
    assert two.current() == seen  # read at most every POLL seconds
    time.sleep(authepoch.POLL + 0.05)
    assert two.current() not in (None, seen)


def test_a_restarted_redis_cannot_bring_back_an_old_epoch(shared_key):
    """Each move writes a new random value: a counter would start again at 1 after a
    restart and meet a right cached under the old 1."""
    one = authepoch.Epoch(REDIS_URL, shared_key)
    first = one.current()
    redis.Redis.from_url(REDIS_URL).delete(shared_key)  # as a restart of Redis loses it
    two = authepoch.Epoch(REDIS_URL, shared_key)
    assert two.current() is not None
    assert two.current()[1] != first[1]


def test_redis_away_makes_the_epoch_unknown_and_the_missed_move_is_written_later(
        shared_key):
    good = authepoch.Epoch(REDIS_URL, shared_key)
    before = good.current()
    away = authepoch.Epoch("redis://127.0.0.1:1/0", shared_key)  # nothing listens there
    assert away.current() is None
    away.move()  # could not be written: owed
    away._redis = redis.Redis.from_url(REDIS_URL)  # Redis answers again
    away._read_at = float("-inf")
    assert away.current() is not None  # the owed move was written first
    time.sleep(authepoch.POLL + 0.05)
    assert good.current()[1] != before[1]


def test_commits_move_the_epoch_only_when_rights_can_change(app, db_session, factory):
    from accounts.models import ApiToken
    from accounts.service import issue_token

    epoch = authepoch.epoch(app)
    unit = factory.org_unit("第一支部")
    site = factory.site(unit, "一号会议室")
    member = factory.member(unit, site, "张三")
    user = factory.user("member", member_id=member.id)
    issue_token(db_session, user)
    db_session.commit()

    def moved(change) -> bool:
        before = epoch.current()
        change()
        db_session.commit()
        return epoch.current() != before

    token = db_session.query(ApiToken).filter_by(user_id=user.id).one()
    assert not moved(lambda: setattr(token, "last_used_at", token.created_at))
    assert not moved(lambda: setattr(user, "locale", "en"))
    assert moved(lambda: setattr(user, "active", False))
    assert moved(lambda: setattr(token, "revoked", True))
    assert moved(lambda: setattr(member, "status", "transferred"))
    assert moved(lambda: setattr(site, "org_unit_id", factory.org_unit("第二支部").id))
    study, _ = make_session(db_session, title="党课", start=utcnow(), minutes=60,
                            units=[unit])
    db_session.commit()
    assert moved(lambda: study.sites.append(site))  # a target added: a collection
    assert not moved(lambda: None)  # nothing at all


def test_while_the_first_read_is_under_way_the_epoch_is_unknown(shared_key):
    """Events handled while a process's first read of Redis is in flight must not see an
    empty epoch (a right cached under it was re-checked in the first second of a roll
    call: 16 of 100 screens in bench/stack.py at 10,000 connections)."""
    epoch = authepoch.Epoch(REDIS_URL, shared_key)
    epoch._read_at = time.monotonic()  # as another greenlet's read in flight
    assert epoch.current() is None
    epoch._read_at = float("-inf")
    assert epoch.current() is not None
