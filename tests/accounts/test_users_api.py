"""The users API: who may create, read and change which users."""

import pytest


@pytest.fixture
def tree(factory, db_session):
    """A committee with two branches, a site in each, a member in branch A."""
    committee = factory.org_unit("党委", kind="committee")
    a = factory.org_unit("一支部", parent=committee)
    b = factory.org_unit("二支部", parent=committee)
    site_a, site_b = factory.site(a), factory.site(b)
    member_a = factory.member(a, site_a)
    db_session.commit()
    return {"committee": committee, "a": a, "b": b, "site_a": site_a, "site_b": site_b,
            "member_a": member_a}


def test_admin_creates_each_role_with_its_scope(client, factory, tree):
    headers = factory.headers(factory.user("admin"))
    bodies = [
        {"role": "organizer", "org_unit_id": tree["a"].id},
        {"role": "site_operator", "site_id": tree["site_a"].id},
        {"role": "member", "member_id": tree["member_a"].id},
        {"role": "trainer"},
        {"role": "admin"},
    ]
    for n, body in enumerate(bodies):
        r = client.post("/api/v1/users", headers=headers, json={
            "username": f"u{n}", "password": "long-enough", "display_name": f"用户{n}", **body})
        assert r.status_code == 201, r.get_json()
        assert r.get_json()["role"] == body["role"]
        assert "password" not in r.get_json()


def test_role_without_its_scope_is_refused(client, factory, tree):
    headers = factory.headers(factory.user("admin"))
    r = client.post("/api/v1/users", headers=headers, json={
        "username": "o", "password": "long-enough", "role": "organizer"})
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "org_unit_id"


def test_unknown_role_and_duplicate_username(client, factory, tree):
    headers = factory.headers(factory.user("admin", username="root"))
    r = client.post("/api/v1/users", headers=headers, json={
        "username": "x", "password": "long-enough", "role": "emperor"})
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "role"
    r = client.post("/api/v1/users", headers=headers, json={
        "username": "root", "password": "long-enough", "role": "trainer"})
    assert r.status_code == 409


def test_organizer_creates_only_inside_his_subtree(client, factory, tree):
    organizer = factory.user("organizer", org_unit_id=tree["a"].id)
    headers = factory.headers(organizer)
    ok = client.post("/api/v1/users", headers=headers, json={
        "username": "op-a", "password": "long-enough", "role": "site_operator",
        "site_id": tree["site_a"].id})
    assert ok.status_code == 201
    foreign = client.post("/api/v1/users", headers=headers, json={
        "username": "op-b", "password": "long-enough", "role": "site_operator",
        "site_id": tree["site_b"].id})
    assert foreign.status_code == 403
    admin = client.post("/api/v1/users", headers=headers, json={
        "username": "boss", "password": "long-enough", "role": "admin"})
    assert admin.status_code == 403


@pytest.mark.parametrize("role", ["trainer", "site_operator", "member"])
def test_other_roles_cannot_create_or_list_users(client, factory, tree, role):
    scope = {"site_operator": {"site_id": tree["site_a"].id},
             "member": {"member_id": tree["member_a"].id}}.get(role, {})
    headers = factory.headers(factory.user(role, **scope))
    assert client.get("/api/v1/users", headers=headers).status_code == 403
    r = client.post("/api/v1/users", headers=headers, json={
        "username": "x", "password": "long-enough", "role": "trainer"})
    assert r.status_code == 403


def test_site_screen_token_is_not_a_user(client, factory, tree, db_session):
    from accounts.service import issue_site_token

    token = issue_site_token(db_session, tree["site_a"])
    db_session.commit()
    r = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


def test_organizer_lists_only_his_subtree(client, factory, tree):
    organizer = factory.user("organizer", org_unit_id=tree["a"].id)
    factory.user("site_operator", username="op-a", site_id=tree["site_a"].id)
    factory.user("site_operator", username="op-b", site_id=tree["site_b"].id)
    factory.user("trainer", username="teacher")
    headers = factory.headers(organizer)
    r = client.get("/api/v1/users", headers=headers)
    assert r.status_code == 200
    names = {u["username"] for u in r.get_json()}
    assert "op-a" in names
    assert "op-b" not in names
    assert "teacher" not in names
    assert "X-Pagination" in r.headers


def test_deactivating_a_user_revokes_his_tokens(client, factory, tree):
    admin_headers = factory.headers(factory.user("admin"))
    trainer = factory.user("trainer", username="teacher")
    trainer_headers = factory.headers(trainer)
    assert client.get("/api/v1/users/me", headers=trainer_headers).status_code == 200
    r = client.patch(f"/api/v1/users/{trainer.id}", headers=admin_headers,
                     json={"active": False})
    assert r.status_code == 200
    assert r.get_json()["active"] is False
    assert client.get("/api/v1/users/me", headers=trainer_headers).status_code == 401
    login = client.post("/api/v1/auth/token",
                        json={"username": "teacher", "password": "password123"})
    assert login.status_code == 401


def test_user_changes_own_password_and_language(client, factory, tree):
    trainer = factory.user("trainer", username="teacher")
    headers = factory.headers(trainer)
    r = client.patch(f"/api/v1/users/{trainer.id}", headers=headers,
                     json={"password": "a-new-password", "current_password": "password123",
                           "locale": "en"})
    assert r.status_code == 200
    issued = client.post("/api/v1/auth/token", json={
        "username": "teacher", "password": "a-new-password"})
    assert issued.status_code == 200
    headers = {"Authorization": f"Bearer {issued.json['token']}"}
    assert client.patch(f"/api/v1/users/{trainer.id}", headers=headers,
                        json={"active": False}).status_code == 403


def test_cookie_session_needs_csrf_for_writes(app, factory, tree, db_session):
    """A logged-in page may call the API, but a write without the CSRF token is refused."""
    factory.user("admin", username="boss", password="secret-pass")
    db_session.commit()
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
    r = client.post("/login", data={"username": "boss", "password": "secret-pass",
                                    "csrf_token": csrf})
    assert r.status_code == 302
    assert client.get("/api/v1/users/me").status_code == 200
    body = {"username": "t2", "password": "long-enough", "role": "trainer"}
    assert client.post("/api/v1/users", json=body).status_code == 400
    r = client.post("/api/v1/users", json=body, headers={"X-CSRFToken": csrf})
    assert r.status_code == 201
