"""Rate limits (issue 10, limits): Flask-Limiter in Redis when REDIS_URL is set, in memory
otherwise, still serving while Redis is down; keyed by who acts, so a meeting room's
members behind one address are never refused for each other's requests.

The apps here name Redis as the limits' storage only (RATELIMIT_STORAGE_URI, which
REDIS_URL sets): REDIS_URL would also put Socket.IO on the Redis queue, which the
in-process socket test clients of later tests cannot use."""

from __future__ import annotations

import uuid

import pytest
import redis
from flask import Flask

from accounts.throttle import FallbackFailures, RedisFailures
from app import create_app
from core import ratelimit
from extensions import db
from tests.conftest import Factory

REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
PASSWORD = "limits-pass-2026"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the service is part of this machine; CI starts it
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url) -> str:
    """A key prefix of this test's own (other runs share the Redis server); its keys are
    deleted afterwards."""
    name = f"yjtest-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)


def _probe_app(request, app_config: dict, **overrides) -> Flask:
    """The test's app (its database emptied afterwards), with a probe route limited like
    a QR check-in: per calling user."""
    app_config.update(overrides)
    app = request.getfixturevalue("app")

    @app.route("/api/probe", methods=["POST"])
    @ratelimit.limit_qr_check_ins
    def probe():
        return {"ok": True}

    return app


def _token_request(client, username: str, password: str, addr: str = "10.1.1.1"):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_limit_answers_429_with_retry_after_per_user(app_config, backend, request):
    overrides = {"YUANJIAO_QR_CHECKINS_PER_MINUTE": 2}
    if backend == "redis":
        overrides |= {"RATELIMIT_STORAGE_URI": request.getfixturevalue("redis_url"),
                      "RATELIMIT_KEY_PREFIX": request.getfixturevalue("prefix")}
    app = _probe_app(request, app_config, **overrides)
    factory = Factory(db.session)
    first, second = (factory.headers(factory.user("trainer")) for _ in range(2))
    client = app.test_client()
    assert [client.post("/api/probe", headers=first).status_code for _ in range(3)] == [
        200, 200, 429]
    refused = client.post("/api/probe", headers=first)
    assert refused.json["error"] == "too_many_requests"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert client.post("/api/probe", headers=second).status_code == 200  # his own count
    if backend == "redis":
        keys = redis.Redis.from_url(REDIS_URL).keys(f"*{overrides['RATELIMIT_KEY_PREFIX']}*")
        assert any(b"qr" in key for key in keys), keys


def test_a_rooms_roll_call_of_1000_members_is_not_refused(app_config, request):
    """1,000 members check in from one address (the room's network) within the minute:
    each is counted as himself, so none is refused."""
    from accounts.models import User
    from accounts.service import issue_token

    app = _probe_app(request, app_config, YUANJIAO_QR_CHECKINS_PER_MINUTE=10)
    users = [User(username=f"m{n}", password_hash="-", role="trainer") for n in range(1000)]
    db.session.add_all(users)
    db.session.flush()
    tokens = [issue_token(db.session, user) for user in users]
    db.session.commit()
    client = app.test_client()
    statuses = {client.post("/api/probe", headers={"Authorization": f"Bearer {token}"},
                            environ_base={"REMOTE_ADDR": "10.20.0.1"}).status_code
                for token in tokens}
    assert statuses == {200}


def test_redis_counts_are_shared_by_every_worker(app_config, request, redis_url, prefix):
    """Two apps (two workers) on one Redis: the login failures count together."""
    app_config.update({"RATELIMIT_STORAGE_URI": redis_url, "RATELIMIT_KEY_PREFIX": prefix,
                       "YUANJIAO_LOGINS_PER_MINUTE": 100})
    one = request.getfixturevalue("app")
    two = create_app(app_config)
    Factory(db.session).user("trainer", username="shared", password=PASSWORD)
    db.session.commit()
    for n in range(5):
        client = (one if n % 2 else two).test_client()
        with client.application.app_context():
            assert _token_request(client, "shared", f"wrong-{n}").status_code == 401
    with two.app_context():
        refused = _token_request(two.test_client(), "shared", PASSWORD)
        assert refused.status_code == 429
        assert refused.json["error"] == "too_many_attempts"
        two_db = db.engine
    two_db.dispose()


def test_while_redis_is_down_requests_are_served_and_still_limited(app_config, request):
    """Redis unreachable: counts go on in this process (Flask-Limiter's in-memory
    fallback; the login throttle's own), nothing answers 500 or refuses for it."""
    app = _probe_app(request, app_config, RATELIMIT_STORAGE_URI=DEAD_REDIS_URL,
                     YUANJIAO_QR_CHECKINS_PER_MINUTE=2)
    factory = Factory(db.session)
    headers = factory.headers(factory.user("trainer"))
    factory.user("trainer", username="offline", password=PASSWORD)
    db.session.commit()
    client = app.test_client()
    assert [client.post("/api/probe", headers=headers).status_code for _ in range(3)] == [
        200, 200, 429]
    assert _token_request(client, "offline", PASSWORD).status_code == 200
    for n in range(5):
        assert _token_request(client, "offline", f"wrong-{n}").status_code == 401
    assert _token_request(client, "offline", PASSWORD).status_code == 429


def test_the_failure_store_falls_back_to_memory():
    store = FallbackFailures(RedisFailures(DEAD_REDIS_URL, "t:"))
    store.add("k", 100.0, 60)
    assert store.add("k", 101.0, 60).count == 2
    assert store.get("k", 102.0, 60).count == 2
    store.clear("k")
    assert store.get("k", 102.0, 60).count == 0


def test_the_failure_store_in_redis(redis_url, prefix):
    store = RedisFailures(redis_url, prefix + ":")
    assert store.add("k", 100.0, 60).count == 1
    assert store.add("k", 101.0, 60).count == 2
    assert store.get("k", 102.0, 60).count == 2
    assert store.get("k", 161.5, 60).count == 0  # forgotten after the time given
    assert 0 < redis.Redis.from_url(redis_url).ttl(f"{prefix}:k") <= 61
    store.clear("k")
    assert store.get("k", 102.0, 60).count == 0
