"""Security, sessions and tokens (issue 10, finding 2): logout, password change or reset,
deactivation and reactivation end old cookies; API tokens expire, can be revoked, and
alone cannot change the password."""

from __future__ import annotations

import datetime as dt
import re

import config
from accounts import service
from accounts.models import ApiToken
from core.types import utcnow

PASSWORD = "secret-pass-01"


def _login(app, username: str, password: str = PASSWORD):
    """A browser: logged in through the form, with its session and remember cookies."""
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert client.get_cookie("remember_token") is not None
    return client


def _copy_cookies(source, target) -> None:
    for name in ("session", "remember_token"):
        cookie = source.get_cookie(name)
        if cookie is not None:
            target.set_cookie(name, cookie.value)


def _csrf(client) -> str:
    """The CSRF token of a browser's session, as its pages carry it."""
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page)[1]


def _logged_in(client) -> bool:
    return client.get("/", follow_redirects=False).status_code == 200


def _remember_only(app, browser):
    """A new browser that has only the old remember cookie (the session cookie expired)."""
    fresh = app.test_client()
    fresh.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    return fresh


def test_logout_ends_the_old_session_and_remember_cookies(app, factory, db_session):
    factory.user("organizer", username="org1", password=PASSWORD,
                 org_unit_id=factory.org_unit().id)
    db_session.commit()
    browser = _login(app, "org1")
    stolen = app.test_client()
    _copy_cookies(browser, stolen)
    remembered = _remember_only(app, browser)
    assert _logged_in(stolen)
    assert browser.post("/logout").status_code == 302
    assert not _logged_in(browser)
    assert not _logged_in(stolen)
    assert not _logged_in(remembered)
    # Logging in again works, with a new session.
    assert _logged_in(_login(app, "org1"))


def test_cookies_carry_no_user_id(app, factory, db_session):
    user = factory.user("admin", username="boss", password=PASSWORD)
    db_session.commit()
    browser = _login(app, "boss")
    with browser.session_transaction() as session:
        assert session["_user_id"] == user.session_token
        assert session["_user_id"] != str(user.id)


def test_password_reset_ends_sessions_and_tokens(app, client, factory, db_session):
    unit = factory.org_unit()
    victim = factory.user("site_operator", username="op1", password=PASSWORD,
                          site_id=factory.site(unit).id)
    admin_headers = factory.headers(factory.user("admin"))
    victim_headers = factory.headers(victim)
    browser = _login(app, "op1")
    remembered = _remember_only(app, browser)
    assert client.get("/api/v1/users/me", headers=victim_headers).status_code == 200
    reset = client.patch(f"/api/v1/users/{victim.id}", headers=admin_headers,
                         json={"password": "another-pass-02"})
    assert reset.status_code == 200, reset.json
    assert not _logged_in(browser)
    assert not _logged_in(remembered)
    assert client.get("/api/v1/users/me", headers=victim_headers).status_code == 401
    assert _logged_in(_login(app, "op1", "another-pass-02"))


def test_reset_through_the_users_page_ends_sessions(app, factory, db_session):
    factory.user("admin", username="boss", password=PASSWORD)
    victim = factory.user("trainer", username="t1", password=PASSWORD)
    db_session.commit()
    victim_browser = _login(app, "t1")
    admin_browser = _login(app, "boss")
    page = admin_browser.get("/users")
    assert f"/users/{victim.id}/tokens" in page.get_data(as_text=True)  # the revoke button
    response = admin_browser.post(f"/users/{victim.id}/password", data={
        "password": "another-pass-03", "csrf_token": _csrf(admin_browser)})
    assert response.status_code == 302
    assert not _logged_in(victim_browser)


def test_deactivation_and_reactivation_do_not_revive_cookies(app, client, factory,
                                                              db_session):
    victim = factory.user("trainer", username="t2", password=PASSWORD)
    admin_headers = factory.headers(factory.user("admin"))
    browser = _login(app, "t2")
    remembered = _remember_only(app, browser)
    assert client.patch(f"/api/v1/users/{victim.id}", headers=admin_headers,
                        json={"active": False}).status_code == 200
    assert not _logged_in(browser)
    assert client.patch(f"/api/v1/users/{victim.id}", headers=admin_headers,
                        json={"active": True}).status_code == 200
    assert not _logged_in(browser)
    assert not _logged_in(remembered)


def test_own_password_change_needs_the_current_password(app, client, factory, db_session):
    user = factory.user("trainer", username="t3", password=PASSWORD)
    headers = factory.headers(user)
    other_headers = factory.headers(user)
    url = f"/api/v1/users/{user.id}"
    refused = client.patch(url, headers=headers, json={"password": "stolen-pass-04"})
    assert refused.status_code == 403
    assert refused.json["error"] == "wrong_password"
    wrong = client.patch(url, headers=headers, json={"password": "stolen-pass-04",
                                                      "current_password": "guess-guess"})
    assert wrong.status_code == 403
    assert service.authenticate(db_session, "t3", PASSWORD)
    done = client.patch(url, headers=headers, json={"password": "my-new-pass-05",
                                                     "current_password": PASSWORD})
    assert done.status_code == 200
    # Every token of the user is revoked by the change, the one used too.
    assert client.get("/api/v1/users/me", headers=other_headers).status_code == 401
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401


def test_own_password_change_in_the_browser_keeps_this_browser(app, factory, db_session):
    user = factory.user("trainer", username="t4", password=PASSWORD)
    db_session.commit()
    browser = _login(app, "t4")
    other = _login(app, "t4")
    response = browser.patch(f"/api/v1/users/{user.id}", headers={"X-CSRFToken": _csrf(browser)},
                             json={"password": "my-new-pass-06", "current_password": PASSWORD})
    assert response.status_code == 200, response.json
    assert _logged_in(browser)
    assert not _logged_in(other)


def test_tokens_expire(app, client, factory, db_session):
    user = factory.user("trainer", username="t5", password=PASSWORD)
    db_session.commit()
    issued = client.post("/api/v1/auth/token", json={"username": "t5", "password": PASSWORD})
    assert issued.status_code == 200
    expires = dt.datetime.fromisoformat(issued.json["expires_at"])
    assert dt.timedelta(days=89) < expires - utcnow() <= dt.timedelta(days=90)
    token = issued.json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    row = db_session.scalar(db_session.query(ApiToken).filter_by(
        token_hash=service.hash_token(token)).statement)
    assert row.last_used_at is not None  # written on use
    row.expires_at = utcnow() - dt.timedelta(seconds=1)
    db_session.commit()
    expired = client.get("/api/v1/users/me", headers=headers)
    assert expired.status_code == 401
    assert expired.json["error"] == "invalid_token"
    # The lifetime is configurable.
    config.replace_settings(app, token_days=7)
    short = client.post("/api/v1/auth/token", json={"username": "t5", "password": PASSWORD})
    expires = dt.datetime.fromisoformat(short.json["expires_at"])
    assert expires - utcnow() <= dt.timedelta(days=7)
    del user


def test_last_used_at_is_throttled(app, client, factory, db_session):
    user = factory.user("trainer")
    token = factory.token(user)
    db_session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    row = db_session.scalar(db_session.query(ApiToken).filter_by(user_id=user.id).statement)
    assert row.last_used_at is None
    client.get("/api/v1/users/me", headers=headers)
    db_session.expire_all()
    first = row.last_used_at
    assert first is not None
    client.get("/api/v1/users/me", headers=headers)
    db_session.expire_all()
    assert row.last_used_at == first  # not rewritten within the throttle window


def test_token_revocation(app, client, factory, db_session):
    unit = factory.org_unit()
    user = factory.user("site_operator", site_id=factory.site(unit).id)
    organizer = factory.user("organizer", org_unit_id=unit.id)
    stranger = factory.user("organizer", org_unit_id=factory.org_unit().id)
    first = factory.headers(user)
    second = factory.headers(user)
    # DELETE /api/v1/auth/token: the caller's own token ends, his others stay.
    assert client.delete("/api/v1/auth/token", headers=first).status_code == 204
    assert client.get("/api/v1/users/me", headers=first).status_code == 401
    assert client.get("/api/v1/users/me", headers=second).status_code == 200
    assert client.delete("/api/v1/auth/token").status_code == 401
    # Every token of a user: not by an organizer of another subtree; by his own organizer.
    url = f"/api/v1/users/{user.id}/tokens"
    assert client.delete(url, headers=factory.headers(stranger)).status_code == 403
    assert client.get("/api/v1/users/me", headers=second).status_code == 200
    assert client.delete(url, headers=factory.headers(organizer)).status_code == 204
    assert client.get("/api/v1/users/me", headers=second).status_code == 401



def test_a_role_or_scope_change_ends_sessions_and_tokens(app, client, factory, db_session):
    """An operator moved to another site (or made a member): his cookies, remember cookie
    and tokens end with the rights they were issued for; audited."""
    unit = factory.org_unit()
    site_a, site_b = factory.site(unit), factory.site(unit)
    foreign = factory.site(factory.org_unit())
    victim = factory.user("site_operator", username="op9", password=PASSWORD,
                          site_id=site_a.id)
    organizer = factory.user("organizer", org_unit_id=unit.id)
    admin_headers = factory.headers(factory.user("admin"))
    organizer_headers = factory.headers(organizer)
    victim_headers = factory.headers(victim)
    browser = _login(app, "op9")
    remembered = _remember_only(app, browser)
    url = f"/api/v1/users/{victim.id}"
    # An organizer may not move him out of his subtree, nor make him an admin.
    assert client.patch(url, headers=organizer_headers,
                        json={"site_id": foreign.id}).status_code == 403
    assert client.patch(url, headers=organizer_headers,
                        json={"role": "admin"}).status_code == 403
    assert client.patch(url, headers=victim_headers,
                        json={"site_id": site_b.id}).status_code == 403  # not himself
    assert _logged_in(browser)
    moved = client.patch(url, headers=organizer_headers, json={"site_id": site_b.id})
    assert moved.status_code == 200, moved.json
    assert moved.json["site_id"] == site_b.id
    assert not _logged_in(browser)
    assert not _logged_in(remembered)
    assert client.get("/api/v1/users/me", headers=victim_headers).status_code == 401
    # A role change: the scope of the new role is required, and the old one dropped.
    member = factory.member(unit, site_b)
    db_session.commit()
    assert client.patch(url, headers=admin_headers, json={"role": "member"}).status_code == 422
    changed = client.patch(url, headers=admin_headers,
                           json={"role": "member", "member_id": member.id})
    assert changed.status_code == 200, changed.json
    assert (changed.json["role"], changed.json["site_id"], changed.json["member_id"]) == (
        "member", None, member.id)
    log = client.get("/api/v1/audit-log", headers=admin_headers).json
    assert [e["details"]["to"]["role"] for e in log if e["action"] == "user_role_changed"] == [
        "member", "site_operator"]
