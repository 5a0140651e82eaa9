"""Security, headers and cookies (issue 10, finding 8)."""

from __future__ import annotations

import datetime as dt


def test_pages_and_api_carry_security_headers(client):
    for path in ("/login", "/api/v1/users/me", "/static/js/common.js"):
        response = client.get(path)
        response.close()  # a static file's handle
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Frame-Options"] == "DENY"
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self';" in csp  # no inline scripts
        assert response.headers["Server"] == "Yuanjiao"


def test_api_docs_may_start_swagger_inline(client):
    assert "'unsafe-inline'" in client.get("/api/docs").headers["Content-Security-Policy"]


def test_templates_have_no_inline_scripts_or_handlers():
    import re
    from pathlib import Path

    for path in Path("templates").rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text):
            assert 'type="application/json"' in tag, f"{path}: inline script {tag}"
        assert not re.search(r"\son[a-z]+=\"", text), f"{path}: inline event handler"


def test_cookies_samesite_and_remember_for_30_days(app, client, factory, db_session):
    factory.user("admin", username="boss", password="boss-pass-2026")
    db_session.commit()
    response = client.post("/login", data={"username": "boss", "password": "boss-pass-2026"})
    cookies = response.headers.getlist("Set-Cookie")
    remember = next(c for c in cookies if c.startswith("remember_token="))
    session = next(c for c in cookies if c.startswith("session="))
    for cookie in (remember, session):
        assert "SameSite=Lax" in cookie
        assert "HttpOnly" in cookie
    assert app.config["REMEMBER_COOKIE_DURATION"] == dt.timedelta(days=30)


def test_secure_cookies_setting(app_config):
    from app import create_app

    app = create_app({**app_config, "YUANJIAO_SECURE_COOKIES": True})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True
