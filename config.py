"""Configuration: embedded defaults, then the environment, then test overrides."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def default_config(instance_path: str) -> dict[str, Any]:
    """The embedded default: SQLite under instance/, in-process media, demo data."""
    return {
        "SECRET_KEY": None,  # filled from instance/secret_key on first start
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(instance_path) / 'yuanjiao.sqlite3'}",
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "REDIS_URL": None,
        "YUANJIAO_PORT": 5000,
        "YUANJIAO_HOST": "127.0.0.1",
        "YUANJIAO_DEMO": True,
        "YUANJIAO_ADMIN_USERNAME": None,
        "YUANJIAO_ADMIN_PASSWORD": None,
        "YUANJIAO_AUTO_MIGRATE": True,
        "YUANJIAO_DEFAULT_TIMEZONE": "Asia/Shanghai",
        # Media: "inprocess" starts the aiortc loop thread, "off" starts nothing
        # (most tests), a list of URLs reaches separate `python -m video.node` processes.
        "YUANJIAO_MEDIA": "inprocess",
        "YUANJIAO_MEDIA_NODES": [],
        #: Shared secret between the web app and `python -m video.node` processes.
        "YUANJIAO_MEDIA_NODE_SECRET": "",
        "YUANJIAO_ICE_SERVERS": [],
        "YUANJIAO_RECORDINGS_DIR": str(Path(instance_path) / "recordings"),
        # Materialize open-ended recurrences this far ahead.
        "YUANJIAO_HORIZON_DAYS": 400,
        "YUANJIAO_STUDY_HOURS_REQUIRED": 32,
        "YUANJIAO_MAKEUP_SHARE": 0.9,
        "YUANJIAO_ATTENDANCE_GRACE_SECONDS": 90,
        # A socket connection's right to operate a site is re-checked after this long.
        "YUANJIAO_ATTENDANCE_AUTH_TTL": 30,
        # Leaving more than this many minutes before the end counts as leaving early.
        "YUANJIAO_LEFT_EARLY_MINUTES": 10,
        "YUANJIAO_QR_ROTATE_SECONDS": 25,
        "BABEL_DEFAULT_LOCALE": "zh",
        "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
        "BABEL_TRANSLATION_DIRECTORIES": str(BASE_DIR / "translations"),
        "LANGUAGES": ["zh", "en"],
        "WTF_CSRF_TIME_LIMIT": None,
        # Sessions: the remember cookie lasts 30 days; neither cookie is sent by other
        # sites' requests (SameSite=Lax) nor readable by scripts.
        "REMEMBER_COOKIE_DURATION": dt.timedelta(days=30),
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        # Behind HTTPS: cookies only over HTTPS. Behind a reverse proxy: trust one hop of
        # X-Forwarded-For/-Proto/-Host (the login throttle counts per client address).
        "YUANJIAO_SECURE_COOKIES": False,
        "YUANJIAO_PROXY_FIX": False,
        # Days a user's API token (POST /api/v1/auth/token) stays valid.
        "YUANJIAO_TOKEN_DAYS": 90,
        # Login throttling: this many failures for one username (or from one address:
        # a meeting room's phones share one) within the window answer 429 until the
        # oldest leaves it.
        "YUANJIAO_LOGIN_MAX_FAILURES": 5,
        "YUANJIAO_LOGIN_MAX_FAILURES_PER_IP": 20,
        "YUANJIAO_LOGIN_WINDOW_SECONDS": 900,
        # Imports per user, and QR check-ins per member, within a minute (then 429).
        "YUANJIAO_IMPORTS_PER_MINUTE": 10,
        "YUANJIAO_QR_CHECKINS_PER_MINUTE": 10,
        # Requests larger than this are refused with 413 before their body is read.
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
        # Events one .ics import may hold (more is refused with 422 before parsing).
        "YUANJIAO_ICS_MAX_EVENTS": 2000,
        # flask-smorest / OpenAPI
        "API_TITLE": "Yuanjiao API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        "OPENAPI_SWAGGER_UI_URL": "/static/vendor/swagger-ui-dist/",
        "API_SPEC_OPTIONS": {
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer"},
                }
            },
            "security": [{"bearerAuth": []}],
        },
    }


def from_environment() -> dict[str, Any]:
    """Settings taken from YUANJIAO_*, DATABASE_URL and REDIS_URL."""
    env = os.environ
    out: dict[str, Any] = {}
    if env.get("DATABASE_URL"):
        url = env["DATABASE_URL"]
        # Heroku-style URLs name the driver "postgres://"; SQLAlchemy wants psycopg 3.
        if url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url[len("postgres://") :]
        elif url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        out["SQLALCHEMY_DATABASE_URI"] = url
    if env.get("REDIS_URL"):
        out["REDIS_URL"] = env["REDIS_URL"]
    if env.get("SECRET_KEY") or env.get("YUANJIAO_SECRET_KEY"):
        out["SECRET_KEY"] = env.get("YUANJIAO_SECRET_KEY") or env["SECRET_KEY"]
    if env.get("YUANJIAO_PORT"):
        out["YUANJIAO_PORT"] = int(env["YUANJIAO_PORT"])
    if env.get("YUANJIAO_HOST"):
        out["YUANJIAO_HOST"] = env["YUANJIAO_HOST"]
    if "YUANJIAO_DEMO" in env:
        out["YUANJIAO_DEMO"] = _bool(env["YUANJIAO_DEMO"], True)
    for key in ("YUANJIAO_ADMIN_USERNAME", "YUANJIAO_ADMIN_PASSWORD", "YUANJIAO_MEDIA",
                "YUANJIAO_MEDIA_NODE_SECRET",
                "YUANJIAO_RECORDINGS_DIR", "YUANJIAO_DEFAULT_TIMEZONE"):
        if env.get(key):
            out[key] = env[key]
    if env.get("YUANJIAO_MEDIA_NODES"):
        out["YUANJIAO_MEDIA_NODES"] = [
            u.strip() for u in env["YUANJIAO_MEDIA_NODES"].split(",") if u.strip()
        ]
    if env.get("YUANJIAO_ICE_SERVERS"):
        out["YUANJIAO_ICE_SERVERS"] = json.loads(env["YUANJIAO_ICE_SERVERS"])
    if "YUANJIAO_AUTO_MIGRATE" in env:
        out["YUANJIAO_AUTO_MIGRATE"] = _bool(env["YUANJIAO_AUTO_MIGRATE"], True)
    for key in ("YUANJIAO_SECURE_COOKIES", "YUANJIAO_PROXY_FIX"):
        if key in env:
            out[key] = _bool(env[key], False)
    if env.get("YUANJIAO_MAX_CONTENT_LENGTH"):
        out["MAX_CONTENT_LENGTH"] = int(env["YUANJIAO_MAX_CONTENT_LENGTH"])
    for key in ("YUANJIAO_HORIZON_DAYS", "YUANJIAO_QR_ROTATE_SECONDS", "YUANJIAO_TOKEN_DAYS",
                "YUANJIAO_ICS_MAX_EVENTS", "YUANJIAO_LOGIN_MAX_FAILURES",
                "YUANJIAO_LOGIN_MAX_FAILURES_PER_IP", "YUANJIAO_LOGIN_WINDOW_SECONDS",
                "YUANJIAO_IMPORTS_PER_MINUTE", "YUANJIAO_QR_CHECKINS_PER_MINUTE",
                "YUANJIAO_ATTENDANCE_GRACE_SECONDS", "YUANJIAO_LEFT_EARLY_MINUTES"):
        if env.get(key):
            out[key] = int(env[key])
    if env.get("YUANJIAO_MAKEUP_SHARE"):
        out["YUANJIAO_MAKEUP_SHARE"] = float(env["YUANJIAO_MAKEUP_SHARE"])
    if env.get("YUANJIAO_STUDY_HOURS_REQUIRED"):
        out["YUANJIAO_STUDY_HOURS_REQUIRED"] = float(env["YUANJIAO_STUDY_HOURS_REQUIRED"])
    return out
