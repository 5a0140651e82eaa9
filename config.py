"""Configuration: embedded defaults, then the environment, then test overrides.

Every setting of ours is in `SETTINGS` once, with its default and how the environment
spells it: code reads `app.config["YUANJIAO_..."]` and never repeats a default.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.timeutil import DEFAULT_TZ

BASE_DIR = Path(__file__).resolve().parent


def _bool(value: str | None, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _url_list(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


#: Our settings: name -> (default, how to read the environment's string). A default of
#: None that depends on the instance folder is filled by `default_config`.
def _origin_list(value: str) -> list[str]:
    return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]


SETTINGS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    "YUANJIAO_PORT": (5000, int),
    "YUANJIAO_HOST": ("127.0.0.1", str),
    "YUANJIAO_DEMO": (True, _bool),
    "YUANJIAO_ADMIN_USERNAME": (None, str),
    "YUANJIAO_ADMIN_PASSWORD": (None, str),
    # Start-up migrates and seeds (under a lock); off where a deploy step migrates.
    "YUANJIAO_AUTO_MIGRATE": (True, _bool),
    "YUANJIAO_DEFAULT_TIMEZONE": (DEFAULT_TZ, str),
    # Media: "inprocess" starts the aiortc loop thread, "off" starts nothing
    # (most tests), a list of URLs reaches separate `python -m video.node` processes.
    "YUANJIAO_MEDIA": ("inprocess", str),
    "YUANJIAO_MEDIA_NODES": ([], _url_list),
    #: Shared secret between the web app and `python -m video.node` processes.
    "YUANJIAO_MEDIA_NODE_SECRET": ("", str),
    "YUANJIAO_ICE_SERVERS": ([], json.loads),
    #: Other origins whose pages may call /whip and /whep (CORS); the app's own always may.
    "YUANJIAO_CORS_ORIGINS": ([], _origin_list),
    "YUANJIAO_RECORDINGS_DIR": (None, str),  # instance/recordings
    # HLS for members watching alone: the packager writes <dir>/<occurrence_id>/ (video.hls).
    "YUANJIAO_HLS_DIR": (None, str),  # instance/hls
    # Behind nginx: answer HLS requests with X-Accel-Redirect, nginx sends the files.
    "YUANJIAO_HLS_ACCEL": (False, _bool),
    # Janus edges (video.janus): their HTTP API URLs, API secret, Streaming admin key; the
    # origin keeps sites until it serves this many, then sites watch from an edge.
    "YUANJIAO_JANUS_EDGES": ([], _url_list),
    "YUANJIAO_JANUS_SECRET": ("", str),
    "YUANJIAO_JANUS_ADMIN_KEY": ("", str),
    "YUANJIAO_ORIGIN_MAX_SITES": (300, int),
    # Materialize open-ended recurrences this far ahead.
    "YUANJIAO_HORIZON_DAYS": (400, int),
    "YUANJIAO_STUDY_HOURS_REQUIRED": (32, float),
    "YUANJIAO_MAKEUP_SHARE": (0.9, float),
    "YUANJIAO_ATTENDANCE_GRACE_SECONDS": (90, int),
    # A socket connection's right to operate a site is re-checked after this long.
    "YUANJIAO_ATTENDANCE_AUTH_TTL": (30, int),
    # Leaving more than this many minutes before the end counts as leaving early.
    "YUANJIAO_LEFT_EARLY_MINUTES": (10, int),
    "YUANJIAO_QR_ROTATE_SECONDS": (25, int),
    # A roll-call mark queued offline is accepted this many hours after its time.
    "YUANJIAO_OFFLINE_MAX_HOURS": (12.0, float),
    # A member watching alone counts only while he holds a live media session (WHEP).
    "YUANJIAO_VIEWER_REQUIRES_MEDIA": (True, _bool),
    # Days a user's API token (POST /api/v1/auth/token) stays valid.
    "YUANJIAO_TOKEN_DAYS": (90, int),
    # Days a meeting-room screen's token stays valid until renewed on the site's page.
    "YUANJIAO_SCREEN_TOKEN_DAYS": (365, int),
    # Login throttling (accounts.throttle): after this many failures for one username
    # each attempt waits twice as long as the last (1, 2, 4 … s, then 429); at the lock
    # count the username is locked for the lock time. An address (a meeting room's
    # phones share one) has its own, higher, counts. Failures are forgotten the lock time
    # after the latest.
    "YUANJIAO_LOGIN_MAX_FAILURES": (5, int),
    "YUANJIAO_LOGIN_LOCK_FAILURES": (20, int),
    "YUANJIAO_LOGIN_MAX_FAILURES_PER_IP": (20, int),
    "YUANJIAO_LOGIN_LOCK_FAILURES_PER_IP": (100, int),
    "YUANJIAO_LOGIN_LOCK_SECONDS": (900, int),
    # Login attempts (the form and POST /api/v1/auth/token) per username a minute.
    "YUANJIAO_LOGINS_PER_MINUTE": (20, int),
    # Events one .ics import may hold (more is refused with 422 before parsing).
    "YUANJIAO_ICS_MAX_EVENTS": (2000, int),
    # Behind HTTPS: cookies only over HTTPS. Behind a reverse proxy: trust one hop of
    # X-Forwarded-For/-Proto/-Host (the login throttle counts per client address).
    "YUANJIAO_SECURE_COOKIES": (False, _bool),
    "YUANJIAO_PROXY_FIX": (False, _bool),
    # Imports per user, and QR check-ins per member, within a minute (then 429). Rate
    # limits count in Redis when REDIS_URL is set (core.ratelimit, Flask-Limiter).
    "YUANJIAO_IMPORTS_PER_MINUTE": (10, int),
    "YUANJIAO_QR_CHECKINS_PER_MINUTE": (10, int),
}


def default_config(instance_path: str) -> dict[str, Any]:
    """The embedded default: SQLite under instance/, in-process media, demo data."""
    settings = {name: (list(default) if isinstance(default, list) else default)
                for name, (default, _parse) in SETTINGS.items()}
    settings["YUANJIAO_RECORDINGS_DIR"] = str(Path(instance_path) / "recordings")
    settings["YUANJIAO_HLS_DIR"] = str(Path(instance_path) / "hls")
    return {
        "SECRET_KEY": None,  # filled from instance/secret_key on first start
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(instance_path) / 'yuanjiao.sqlite3'}",
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "REDIS_URL": None,
        **settings,
        "BABEL_DEFAULT_LOCALE": "zh",
        "BABEL_DEFAULT_TIMEZONE": settings["YUANJIAO_DEFAULT_TIMEZONE"],
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
        # Requests larger than this are refused with 413 before their body is read
        # (YUANJIAO_MAX_CONTENT_LENGTH in the environment).
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
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


def from_environment(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings taken from YUANJIAO_*, DATABASE_URL, REDIS_URL and SECRET_KEY; an empty
    variable counts as unset."""
    env = dict(os.environ) if env is None else env
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
    for name, (_default, parse) in SETTINGS.items():
        if env.get(name):
            out[name] = parse(env[name])
    if "YUANJIAO_DEFAULT_TIMEZONE" in out:
        out["BABEL_DEFAULT_TIMEZONE"] = out["YUANJIAO_DEFAULT_TIMEZONE"]
    if env.get("YUANJIAO_MAX_CONTENT_LENGTH"):
        out["MAX_CONTENT_LENGTH"] = int(env["YUANJIAO_MAX_CONTENT_LENGTH"])
    return out
