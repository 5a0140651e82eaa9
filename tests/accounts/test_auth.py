"""Login, tokens and the users API."""

import pytest

from accounts.service import authenticate
from core.errors import Unauthorized


def test_token_roundtrip(client, factory, db_session):
    factory.user("admin", username="boss", password="secret-pass")
    db_session.commit()
    r = client.post("/api/v1/auth/token", json={"username": "boss", "password": "secret-pass"})
    assert r.status_code == 200
    token = r.get_json()["token"]
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.get_json()["username"] == "boss"


def test_wrong_password_is_401_json(client, factory, db_session):
    factory.user("admin", username="boss", password="secret-pass")
    db_session.commit()
    r = client.post("/api/v1/auth/token", json={"username": "boss", "password": "nope-nope"})
    assert r.status_code == 401
    assert r.get_json()["error"] == "invalid_credentials"


def test_missing_field_names_it(client):
    r = client.post("/api/v1/auth/token", json={"username": "x"})
    assert r.status_code == 422
    body = r.get_json()
    assert body["error"] == "validation_error"
    assert body["details"]["field"] == "password"


def test_no_token_is_401(client):
    r = client.get("/api/v1/users/me")
    assert r.status_code == 401
    assert r.get_json()["error"] == "login_required"


def test_authenticate_refuses_inactive(factory, db_session):
    user = factory.user("trainer", username="t1", password="secret-pass")
    user.active = False
    db_session.flush()
    with pytest.raises(Unauthorized):
        authenticate(db_session, "t1", "secret-pass")


def test_login_form_lands_on_dashboard(app, factory, db_session):
    factory.user("admin", username="boss", password="secret-pass")
    db_session.commit()
    client = app.test_client()
    r = client.post("/login", data={"username": "boss", "password": "secret-pass"})
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/")
    page = client.get("/")
    assert page.status_code == 200
    assert "工作台" in page.get_data(as_text=True)


def test_openapi_document(client):
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/auth/token" in r.get_json()["paths"]
