"""The app as a newcomer starts it: configuration, migrations, the admin from the environment."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

import config
from app import create_app
from extensions import db
from tests.conftest import PG_URL


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


@pytest.fixture
def empty_database_url(tmp_path) -> str:
    """A database with no tables at all: a new SQLite file, or a new PostgreSQL database."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
        return
    name = f"yj_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migrations_match_models(app_config, empty_database_url):
    """Alembic's migrations build exactly the schema the models describe."""
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": empty_database_url})
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        db.engine.dispose()
    summary = [(d[0], getattr(d[1], "name", "")) if isinstance(d, tuple) else d for d in diff]
    assert diff == [], f"models and migrations differ; run `flask db migrate`: {summary}"


def test_interface_is_chinese_by_default_and_english_on_request(client):
    assert "登录" in client.get("/login").get_data(as_text=True)
    english = client.get("/login?lang=en").get_data(as_text=True)
    assert "Log in" in english
    # the choice sticks for the session
    assert "Log in" in client.get("/login").get_data(as_text=True)


@pytest.mark.live
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
