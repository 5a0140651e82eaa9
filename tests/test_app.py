"""The app as a newcomer starts it: configuration, migrations, the admin from the environment."""

from __future__ import annotations

import os
import signal

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

import config
from app import create_app
from extensions import db


def test_environment_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/d")
    monkeypatch.setenv("YUANJIAO_PORT", "5123")
    monkeypatch.setenv("YUANJIAO_DEMO", "0")
    monkeypatch.setenv("YUANJIAO_MEDIA_NODES", "http://a:1, http://b:2")
    env = config.from_environment()
    assert env["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@h/d"
    assert env["YUANJIAO_PORT"] == 5123
    assert env["YUANJIAO_DEMO"] is False
    assert env["YUANJIAO_MEDIA_NODES"] == ["http://a:1", "http://b:2"]


def test_defaults_are_embedded_sqlite(tmp_path):
    defaults = config.default_config(str(tmp_path))
    assert defaults["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'yuanjiao.sqlite3'}"
    assert defaults["YUANJIAO_PORT"] == 5000
    assert defaults["BABEL_DEFAULT_LOCALE"] == "zh"


def test_migrations_match_models(app_config):
    """Alembic's migrations build exactly the schema the models describe."""
    app = create_app(app_config)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        db.engine.dispose()
    assert diff == [], f"models and migrations differ; run `flask db migrate`: {diff}"


def test_interface_is_chinese_by_default_and_english_on_request(client):
    assert "登录" in client.get("/login").get_data(as_text=True)
    english = client.get("/login?lang=en").get_data(as_text=True)
    assert "Log in" in english
    # the choice sticks for the session
    assert "Log in" in client.get("/login").get_data(as_text=True)


@pytest.mark.browser
def test_started_app_creates_env_admin_and_tokens_survive_restart(live_server_factory):
    """`python app.py` with YUANJIAO_ADMIN_*: the admin logs in; his token outlives a restart."""
    server = live_server_factory({"YUANJIAO_MEDIA": "off"})
    token = server.token()
    me = server.api("GET", "/api/v1/users/me", token)
    assert me.status_code == 200
    assert me.json()["role"] == "admin"
    server.stop(signal.SIGTERM)
    server.start()
    assert server.api("GET", "/api/v1/users/me", token).status_code == 200
    docs = requests.get(server.url + "/api/docs", timeout=10)
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui-dist/" in docs.text
    assert os.path.exists(server.tmp / "live.sqlite3")
