"""Security, login (issue 10, finding 7): throttling per username and per address, the
same work for unknown users, and a password policy for new passwords."""

from __future__ import annotations

import time

import pytest

from accounts import service
from accounts.passwords import check_new_password
from accounts.throttle import LoginThrottle, MemoryFailures, Rule
from core.errors import ValidationError

PASSWORD = "right-pass-2026"


def _token(client, username: str, password: str, addr: str = "10.0.0.1"):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


class Clock:
    """The throttle's time, stopped: a test moves it (no test waits on the wall clock)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app) -> Clock:
    from accounts.throttle import EXTENSION

    stopped = Clock()
    app.extensions[EXTENSION].clock = stopped
    return stopped


def test_api_token_endpoint_is_throttled_per_username(client, factory, db_session, clock):
    factory.user("trainer", username="t1", password=PASSWORD)
    db_session.commit()
    for n in range(5):
        assert _token(client, "t1", f"wrong-{n}", addr=f"10.0.1.{n}").status_code == 401
    blocked = _token(client, "t1", PASSWORD, addr="10.0.2.1")  # even the right one, elsewhere
    assert blocked.status_code == 429
    assert blocked.json["error"] == "too_many_attempts"
    assert blocked.headers["Retry-After"] == "1"
    # Another user is not affected.
    factory.user("trainer", username="t2", password=PASSWORD)
    db_session.commit()
    assert _token(client, "t2", PASSWORD, addr="10.0.2.1").status_code == 200


def test_the_delay_grows_then_the_account_locks(app, client, factory, db_session, clock):
    """After 5 failures each attempt waits 1, 2, 4 … s after the latest failure; the 20th
    failure locks the account for 15 minutes, with an audit entry."""
    app.config["YUANJIAO_LOGINS_PER_MINUTE"] = 100  # the plain rate: not this test's
    factory.user("trainer", username="t3", password=PASSWORD)
    admin_headers = factory.headers(factory.user("admin"))
    for n in range(5):
        assert _token(client, "t3", f"wrong-{n}", addr=f"10.3.0.{n}").status_code == 401
    waits = []
    for n in range(5, 20):
        refused = _token(client, "t3", f"wrong-{n}", addr=f"10.3.1.{n}")
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        clock.now += waits[-1]
        assert _token(client, "t3", f"wrong-{n}", addr=f"10.3.2.{n}").status_code == 401
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900, 900]
    locked = _token(client, "t3", PASSWORD, addr="10.3.3.1")
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "900"
    clock.now += 899
    assert _token(client, "t3", PASSWORD, addr="10.3.3.1").status_code == 429
    clock.now += 1
    assert _token(client, "t3", PASSWORD, addr="10.3.3.1").status_code == 200
    log = client.get("/api/v1/audit-log?page_size=1000", headers=admin_headers).json
    assert [e["details"] for e in log if e["action"] == "login_locked"] == [
        {"failures": 20, "seconds": 900}]


def test_login_page_is_throttled_per_address(app, client, factory, db_session, clock):
    app.config["YUANJIAO_LOGIN_MAX_FAILURES_PER_IP"] = 5
    from accounts import throttle

    throttle.init_app(app)
    app.extensions[throttle.EXTENSION].clock = clock
    factory.user("trainer", username="victim", password=PASSWORD)
    db_session.commit()
    for n in range(5):  # five different usernames from one address
        response = client.post("/login", data={"username": f"guess{n}", "password": "x" * 12},
                               environ_base={"REMOTE_ADDR": "10.9.9.9"})
        assert response.status_code == 200
    blocked = client.post("/login", data={"username": "victim", "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "1"
    assert "登录失败次数过多" in blocked.get_data(as_text=True)
    ok = client.post("/login", data={"username": "victim", "password": PASSWORD},
                     environ_base={"REMOTE_ADDR": "10.9.9.10"})
    assert ok.status_code == 302


def test_logins_per_username_are_rate_limited(app, client, factory, db_session):
    """Flask-Limiter: 20 attempts a minute for one username (form and API together),
    whatever the address and even with the right password; other usernames go on."""
    app.config["YUANJIAO_LOGINS_PER_MINUTE"] = 3
    factory.user("trainer", username="busy", password=PASSWORD)
    db_session.commit()
    assert _token(client, "busy", PASSWORD, addr="10.4.0.1").status_code == 200
    assert _token(client, " busy ", PASSWORD, addr="10.4.0.2").status_code == 200
    page = client.post("/login", data={"username": "busy", "password": PASSWORD},
                       environ_base={"REMOTE_ADDR": "10.4.0.3"})
    assert page.status_code == 302
    limited = _token(client, "busy", PASSWORD, addr="10.4.0.4")
    assert limited.status_code == 429
    assert limited.json["error"] == "too_many_requests"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    english = client.post("/login?lang=en", data={"username": "busy", "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "10.4.0.5"})
    assert english.status_code == 429
    assert english.headers["Retry-After"]
    assert "Too many requests" in english.get_data(as_text=True)
    assert _token(client, "other", "whatever-1234", addr="10.4.0.4").status_code == 401


def test_an_address_locks_later_than_an_account(app):
    """A meeting room's phones share one address: it locks at 100 failures, not 20."""
    limiter = LoginThrottle(MemoryFailures(), user=Rule(5, 20, 900), address=Rule(20, 100, 900))
    now = 5000.0
    for n in range(99):
        limiter.failed(f"member{n}", "10.0.0.1", now=now)
        now += 1000  # each past the address's delay, within its memory
    assert limiter.retry_after("member-new", "10.0.0.1", now=now) is None
    assert limiter.failed("member99", "10.0.0.1", now=now).locked == ("address",)
    assert limiter.retry_after("member-new", "10.0.0.1", now=now) == 900
    assert limiter.retry_after("member-new", "10.0.0.2", now=now) is None


def test_success_clears_the_username_count_and_failures_are_forgotten():
    limiter = LoginThrottle(MemoryFailures(), user=Rule(5, 20, 900), address=Rule(20, 100, 900))
    for n in range(4):
        limiter.failed("u", "1.1.1.1", now=1000 + n)
    assert limiter.retry_after("u", "1.1.1.1", now=1010) is None
    limiter.succeeded("u")
    for n in range(4):
        limiter.failed("u", "1.1.1.1", now=1020 + n)
    assert limiter.retry_after("u", "1.1.1.1", now=1030) is None  # cleared: 4, not 8
    limiter.failed("u", "1.1.1.1", now=1030)
    assert limiter.retry_after("u", "1.1.1.1", now=1030.5) == 1
    assert limiter.retry_after("u", "1.1.1.1", now=1031) is None
    limiter.failed("u", "1.1.1.1", now=1031)
    assert limiter.retry_after("u", "1.1.1.1", now=1031) == 2
    assert limiter.failures("u", now=1031 + 1799).count == 6
    assert limiter.failures("u", now=1031 + 1800).count == 0  # forgotten


def test_unknown_users_cost_the_same_work(app, factory, db_session):
    from werkzeug.security import generate_password_hash

    user = factory.user("trainer", username="known")
    user.password_hash = generate_password_hash(PASSWORD)  # the production hash
    db_session.commit()

    def timed(username: str) -> float:
        best = 10.0
        for _ in range(3):
            started = time.perf_counter()
            with pytest.raises(Exception):  # noqa: B017, PT011 (Unauthorized either way)
                service.authenticate(db_session, username, "wrong-password")
            best = min(best, time.perf_counter() - started)
        return best

    known, unknown = timed("known"), timed("nobody-here")
    assert unknown > known / 3, (known, unknown)


@pytest.mark.parametrize(("password", "username"), [
    ("short", "x"), ("123456789", "x"), ("password123", "x"), ("1234567890", "x"),
    ("zhangsan-2026", "zhangsan"), ("ZhangSan", "zhangsan"), ("aaaaaaaaaaaa", "x"),
])
def test_weak_new_passwords_are_refused(password, username):
    with pytest.raises(ValidationError) as refused:
        check_new_password(password, username)
    assert refused.value.code == "weak_password"
    assert refused.value.details["field"] == "password"


def test_policy_on_creation_change_and_reset(client, factory, db_session):
    admin_headers = factory.headers(factory.user("admin"))
    created = client.post("/api/v1/users", headers=admin_headers, json={
        "username": "lisi", "password": "lisi-12345678", "role": "trainer"})
    assert created.status_code == 422
    created = client.post("/api/v1/users", headers=admin_headers, json={
        "username": "lisi", "password": "password1234", "role": "trainer"})
    assert created.status_code == 422
    assert created.json["error"] == "weak_password"
    created = client.post("/api/v1/users", headers=admin_headers, json={
        "username": "lisi", "password": "plum-river-2026", "role": "trainer"})
    assert created.status_code == 201
    user_id = created.json["id"]
    reset = client.patch(f"/api/v1/users/{user_id}", headers=admin_headers,
                         json={"password": "1234567890"})
    assert reset.status_code == 422
    own = client.post("/api/v1/auth/token", json={"username": "lisi",
                                                  "password": "plum-river-2026"})
    headers = {"Authorization": f"Bearer {own.json['token']}"}
    changed = client.patch(f"/api/v1/users/{user_id}", headers=headers, json={
        "password": "qwertyuiop", "current_password": "plum-river-2026"})
    assert changed.status_code == 422


def test_demo_users_keep_working(client, db_session):
    """The demo seeds through the policy, and its users log in."""
    from demo import DEMO_PASSWORD, seed

    seed(db_session)
    db_session.commit()
    for username in ("organizer", "trainer", "member1"):
        response = client.post("/api/v1/auth/token",
                               json={"username": username, "password": DEMO_PASSWORD})
        assert response.status_code == 200, username


def test_an_admin_lifts_the_throttle(client, factory, db_session, clock):
    user = factory.user("trainer", username="t9", password=PASSWORD)
    admin_headers = factory.headers(factory.user("admin"))
    for n in range(5):
        _token(client, "t9", f"wrong-{n}")
    assert _token(client, "t9", PASSWORD).status_code == 429
    url = f"/api/v1/users/{user.id}/login-failures"
    assert client.delete(url, headers=factory.headers(user)).status_code == 403
    assert client.delete(url, headers=admin_headers).status_code == 204
    assert _token(client, "t9", PASSWORD, addr="10.0.0.2").status_code == 200
    log = client.get("/api/v1/audit-log", headers=admin_headers).json
    assert log[1]["action"] == "throttle_lifted"
    assert log[1]["details"] == {"failures": 5}


def test_audit_log_for_admins(client, factory, db_session):
    user = factory.user("trainer", username="audited", password=PASSWORD)
    admin = factory.user("admin", username="auditor")
    admin_headers = factory.headers(admin)
    _token(client, "audited", "wrong-one")
    _token(client, "nobody", "wrong-two")
    _token(client, "audited", PASSWORD)
    client.patch(f"/api/v1/users/{user.id}", headers=admin_headers,
                 json={"password": "fresh-pass-2026"})
    client.patch(f"/api/v1/users/{user.id}", headers=admin_headers, json={"active": False})
    log = client.get("/api/v1/audit-log", headers=admin_headers)
    assert log.status_code == 200
    seen = [(e["action"], e["username"]) for e in reversed(log.json)]
    assert seen == [("login_failed", "audited"), ("login_failed", "nobody"),
                    ("login", "audited"), ("password_reset", "audited"),
                    ("user_deactivated", "audited")]
    assert log.json[0]["actor_id"] == admin.id
    assert log.json[-1]["address"] == "10.0.0.1"
    assert client.get("/api/v1/audit-log",
                      headers=factory.headers(factory.user("organizer", org_unit_id=factory
                                                           .org_unit().id))).status_code == 403


def test_the_users_page_shows_a_lock_and_unlocks(app, client, factory, db_session, clock):
    """An organizer unlocks his subtree's user on the users page; another's is refused."""
    unit = factory.org_unit()
    site = factory.site(unit)
    factory.user("organizer", username="org-a", password=PASSWORD, org_unit_id=unit.id)
    factory.user("organizer", username="org-b", password=PASSWORD,
                 org_unit_id=factory.org_unit().id)
    user = factory.user("site_operator", username="op-locked", password=PASSWORD,
                        site_id=site.id)
    db_session.commit()
    for n in range(5):
        _token(client, "op-locked", f"wrong-{n}")
    assert _token(client, "op-locked", PASSWORD).status_code == 429

    stranger = app.test_client()
    assert stranger.post("/login", data={"username": "org-b", "password": PASSWORD},
                         environ_base={"REMOTE_ADDR": "10.7.0.2"}).status_code == 302
    assert stranger.post(f"/users/{user.id}/login-failures").status_code == 403

    browser = app.test_client()
    assert browser.post("/login", data={"username": "org-a", "password": PASSWORD},
                        environ_base={"REMOTE_ADDR": "10.7.0.1"}).status_code == 302
    page = browser.get("/users").get_data(as_text=True)
    assert "登录已锁定" in page
    assert f"/users/{user.id}/login-failures" in page
    done = browser.post(f"/users/{user.id}/login-failures", follow_redirects=True)
    assert "已解除该用户的登录锁定" in done.get_data(as_text=True)
    assert "登录已锁定" not in done.get_data(as_text=True)
    assert _token(client, "op-locked", PASSWORD).status_code == 200
