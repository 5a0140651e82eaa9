"""Configuration: embedded defaults, then the environment, then test overrides.

Every setting of ours is a field of `Settings` once, with its default and how the
environment spells it; `create_app` builds the app's frozen `Settings` once, and code reads
typed attributes (`config.settings().horizon_days`) and never repeats a default.
`app.config` keeps every setting under its YUANJIAO_* name too, beside Flask's own keys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from flask import Flask, current_app

from core.timeutil import DEFAULT_TZ

BASE_DIR = Path(__file__).resolve().parent


def _bool(value: str | None, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _url_list(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def _origin_list(value: str) -> list[str]:
    return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]


def _setting(default: Any, parse: Callable[[str], Any]) -> Any:
    """A field of `Settings`: its default, and how to read the environment's string."""
    return field(default=default, metadata={"parse": parse})


@dataclass(frozen=True)
class Settings:
    """Our settings, typed and frozen: built once per app (`create_app`) from the embedded
    defaults, then the environment (`YUANJIAO_<NAME>`), then the overrides; read them as
    `config.settings().horizon_days`. Each field is `YUANJIAO_<FIELD>` in `app.config`
    too (extensions and templates read it there); lists are tuples here.

    A default of None that depends on the instance folder is filled by `default_config`.
    """

    port: int = _setting(5000, int)
    host: str = _setting("127.0.0.1", str)
    demo: bool = _setting(True, _bool)
    admin_username: str | None = _setting(None, str)
    admin_password: str | None = _setting(None, str)
    # Start-up migrates and seeds (under a lock); off where a deploy step migrates.
    auto_migrate: bool = _setting(True, _bool)
    default_timezone: str = _setting(DEFAULT_TZ, str)
    # Media: "inprocess" starts the aiortc loop thread, "off" starts nothing
    # (most tests), a list of URLs reaches separate `python -m video.node` processes.
    media: str = _setting("inprocess", str)
    media_nodes: tuple[str, ...] = _setting((), _url_list)
    #: Shared secret between the web app and `python -m video.node` processes.
    media_node_secret: str = _setting("", str)
    ice_servers: tuple[dict[str, Any], ...] = _setting((), json.loads)
    # coturn with `use-auth-secret` (deploy/turnserver.conf.in): its URLs and its
    # static-auth-secret; pages and WHIP/WHEP answers get credentials valid this long.
    turn_urls: tuple[str, ...] = _setting((), _url_list)
    turn_secret: str = _setting("", str)
    turn_ttl_seconds: int = _setting(12 * 3600, int)
    # Forward mode: "auto" relays the publisher's own encoded video when it suits every
    # site on the top layer (codec, size, bitrate), "off" always decodes and encodes once.
    forward: str = _setting("auto", str)
    # The sites' fast send path (video/fastsend.py: packetized once per layer, batched
    # sends): 3-4x cheaper per site than aiortc's sender loop; on by default since the
    # poor-link profiles pass on it on a starved machine (docs/media.md); 0 keeps aiortc's
    # sender loop; a broadcast's `fast_send` option overrides.
    fast_send: bool = _setting(True, _bool)
    # The Redis pub/sub channel of Socket.IO's message queue: one per deployment sharing a
    # Redis (channels ignore Redis's database numbers), e.g. a benchmark beside a stack.
    # Empty: the deployment's key prefix's (YUANJIAO_REDIS_PREFIX, else one per database),
    # so that two deployments on one Redis never hear each other's rooms.
    socketio_channel: str = _setting("", str)
    # The first part of every Redis key of this deployment (and of its Socket.IO channel);
    # empty: one made from the database's address, so processes sharing a database share
    # it and two deployments on one Redis do not.
    redis_prefix: str = _setting("", str)
    # Seconds between Engine.IO's pings of each socket (a dead screen is noticed within
    # this plus as long again); thousands of idle phones cost a ping each per interval.
    socketio_ping_interval: int = _setting(20, int)
    #: Other origins whose pages may call /whip and /whep (CORS); the app's own always may.
    cors_origins: tuple[str, ...] = _setting((), _origin_list)
    recordings_dir: str | None = _setting(None, str)  # instance/recordings
    # HLS for members watching alone: the packager writes <dir>/<occurrence_id>/ (video.hls).
    hls_dir: str | None = _setting(None, str)  # instance/hls
    # Behind nginx: answer HLS requests with X-Accel-Redirect, nginx sends the files.
    hls_accel: bool = _setting(False, _bool)
    # A member's HLS session (attendance) lapses this long after his last segment fetch.
    hls_session_seconds: int = _setting(10, int)
    # Janus edges (video.janus): their HTTP API URLs, API secret, Streaming admin key; the
    # origin keeps sites until it serves this many, then sites watch from an edge.
    janus_edges: tuple[str, ...] = _setting((), _url_list)
    janus_secret: str = _setting("", str)
    janus_admin_key: str = _setting("", str)
    origin_max_sites: int = _setting(300, int)
    # Materialize open-ended recurrences this far ahead.
    horizon_days: int = _setting(400, int)
    study_hours_required: float = _setting(32.0, float)
    makeup_share: float = _setting(0.9, float)
    attendance_grace_seconds: int = _setting(90, int)
    # A socket connection's cached right (to operate a site, to act as its member) holds
    # while nothing it rests on changed (core/authepoch.py), for at most this many seconds;
    attendance_grant_max_age: int = _setting(600, int)
    # and for this long only while that cannot be known (Redis away).
    attendance_auth_ttl: int = _setting(30, int)
    # The attendance writer waits this long (ms) after a batch's first event for more: a
    # burst then shares one transaction. Every web process has its own writer, so with N
    # processes a batch holds 1/N of the events and its fixed cost (lock, lookups,
    # commit) weighs N times as much per check-in; a longer wait evens that out.
    attendance_write_linger_ms: float = _setting(10.0, float)
    # Leaving more than this many minutes before the end counts as leaving early.
    left_early_minutes: int = _setting(10, int)
    qr_rotate_seconds: int = _setting(25, int)
    # A roll-call mark queued offline is accepted this many hours after its time.
    offline_max_hours: float = _setting(12.0, float)
    # A member watching alone counts only while he holds a live media session (WHEP).
    viewer_requires_media: bool = _setting(True, _bool)
    # Days a user's API token (POST /api/v1/auth/token) stays valid.
    token_days: int = _setting(90, int)
    # Days a meeting-room screen's token stays valid until renewed on the site's page.
    screen_token_days: int = _setting(365, int)
    # Login throttling (accounts.throttle): after this many failures for one username
    # each attempt waits twice as long as the last (1, 2, 4 … s, then 429); at the lock
    # count the username is locked for the lock time. An address (a meeting room's
    # phones share one) has its own, higher, counts. Failures are forgotten twice the
    # lock time after the latest.
    login_max_failures: int = _setting(5, int)
    login_lock_failures: int = _setting(20, int)
    login_max_failures_per_ip: int = _setting(20, int)
    login_lock_failures_per_ip: int = _setting(100, int)
    login_lock_seconds: int = _setting(900, int)
    # Login attempts (the form and POST /api/v1/auth/token) per username a minute.
    logins_per_minute: int = _setting(20, int)
    # Events one .ics import may hold (more is refused with 422 before parsing).
    ics_max_events: int = _setting(2000, int)
    # Behind HTTPS: cookies only over HTTPS. Behind a reverse proxy: trust one hop of
    # X-Forwarded-For/-Proto/-Host (the login throttle counts per client address).
    secure_cookies: bool = _setting(False, _bool)
    proxy_fix: bool = _setting(False, _bool)
    # Imports per user, and QR check-ins per member, within a minute (then 429). Rate
    # limits count in Redis when REDIS_URL is set (core.ratelimit, Flask-Limiter).
    imports_per_minute: int = _setting(10, int)
    qr_checkins_per_minute: int = _setting(10, int)

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Settings:
        """The settings as `values` (an app's config) holds them under YUANJIAO_*,
        each coerced to its field's type; a name missing takes the default."""
        hints = get_type_hints(cls)
        out: dict[str, Any] = {}
        for f in fields(cls):
            name = setting_name(f.name)
            if name in values:
                out[f.name] = _coerce(hints[f.name], values[name])
        return cls(**out)


def setting_name(field_name: str) -> str:
    """`horizon_days` -> `YUANJIAO_HORIZON_DAYS`, as the environment and app.config say it."""
    return f"YUANJIAO_{field_name.upper()}"


def _coerce(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    base = kind
    if get_origin(kind) in (Union, UnionType):  # X | None
        base = next(t for t in get_args(kind) if t is not type(None))
    if get_origin(base) is tuple:
        return tuple(value)
    if base is bool:
        return _bool(value) if isinstance(value, str) else bool(value)
    if base in (int, float):
        return base(value)
    return value


#: Our settings as app.config names them: name -> (default, how to read the environment's
#: string); lists where `Settings` has tuples. Derived from `Settings`, the one list.
SETTINGS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    setting_name(f.name): (list(f.default) if isinstance(f.default, tuple) else f.default,
                           f.metadata["parse"])
    for f in fields(Settings)
}


def settings(app: Flask | None = None) -> Settings:
    """The app's settings (the current app's unless one is given)."""
    return (app or current_app).extensions["settings"]


def init_settings(app: Flask) -> Settings:
    """Build the app's settings from its config, once its config is complete."""
    app.extensions["settings"] = built = Settings.from_config(app.config)
    return built


def replace_settings(app: Flask, **changes: Any) -> Settings:
    """A new frozen Settings with `changes` for a running app (tests), its config alike."""
    built = replace(settings(app), **changes)
    app.extensions["settings"] = built
    for key, value in changes.items():
        app.config[setting_name(key)] = list(value) if isinstance(value, tuple) else value
    return built


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
