"""Settings in one place: each default once (a field of config.Settings, listed in
config.SETTINGS), each readable from the environment, typed and frozen on the app, the
default zone written once."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import config
from app import create_app
from core.timeutil import DEFAULT_TZ

ROOT = Path(__file__).resolve().parent.parent
#: A value for every setting as the environment spells it, and what the app reads.
SAMPLES = {
    "YUANJIAO_PORT": ("5123", 5123),
    "YUANJIAO_HOST": ("0.0.0.0", "0.0.0.0"),
    "YUANJIAO_DEMO": ("0", False),
    "YUANJIAO_ADMIN_USERNAME": ("root", "root"),
    "YUANJIAO_ADMIN_PASSWORD": ("a-long-password", "a-long-password"),
    "YUANJIAO_AUTO_MIGRATE": ("false", False),
    "YUANJIAO_DEFAULT_TIMEZONE": ("Asia/Urumqi", "Asia/Urumqi"),
    "YUANJIAO_MEDIA": ("off", "off"),
    "YUANJIAO_FORWARD": ("off", "off"),
    "YUANJIAO_FAST_SEND": ("0", False),
    "YUANJIAO_SOCKETIO_CHANNEL": ("yuanjiao-bench", "yuanjiao-bench"),
    "YUANJIAO_REDIS_PREFIX": ("oilfield", "oilfield"),
    "YUANJIAO_SOCKETIO_PING_INTERVAL": ("40", 40),
    "YUANJIAO_MEDIA_NODES": ("http://a:1, http://b:2", ["http://a:1", "http://b:2"]),
    "YUANJIAO_MEDIA_NODE_SECRET": ("s3cret", "s3cret"),
    "YUANJIAO_ICE_SERVERS": ('[{"urls": "stun:stun.example:3478"}]',
                             [{"urls": "stun:stun.example:3478"}]),
    "YUANJIAO_TURN_URLS": ("turn:turn.example:3478?transport=udp",
                           ["turn:turn.example:3478?transport=udp"]),
    "YUANJIAO_TURN_SECRET": ("turn-secret", "turn-secret"),
    "YUANJIAO_TURN_TTL_SECONDS": ("3600", 3600),
    "YUANJIAO_RECORDINGS_DIR": ("/srv/recordings", "/srv/recordings"),
    "YUANJIAO_HLS_DIR": ("/srv/hls", "/srv/hls"),
    "YUANJIAO_HLS_ACCEL": ("1", True),
    "YUANJIAO_HLS_SESSION_SECONDS": ("6", 6),
    "YUANJIAO_JANUS_EDGES": ("http://e1:8188/janus", ["http://e1:8188/janus"]),
    "YUANJIAO_JANUS_SECRET": ("js", "js"),
    "YUANJIAO_JANUS_ADMIN_KEY": ("jk", "jk"),
    "YUANJIAO_ORIGIN_MAX_SITES": ("0", 0),
    "YUANJIAO_HORIZON_DAYS": ("100", 100),
    "YUANJIAO_STUDY_HOURS_REQUIRED": ("56", 56.0),
    "YUANJIAO_MAKEUP_SHARE": ("0.75", 0.75),
    "YUANJIAO_ATTENDANCE_GRACE_SECONDS": ("120", 120),
    "YUANJIAO_ATTENDANCE_AUTH_TTL": ("5", 5),
    "YUANJIAO_ATTENDANCE_GRANT_MAX_AGE": ("120", 120),
    "YUANJIAO_ATTENDANCE_WRITE_LINGER_MS": ("4", 4.0),
    "YUANJIAO_LEFT_EARLY_MINUTES": ("15", 15),
    "YUANJIAO_QR_ROTATE_SECONDS": ("40", 40),
    "YUANJIAO_OFFLINE_MAX_HOURS": ("6", 6.0),
    "YUANJIAO_VIEWER_REQUIRES_MEDIA": ("0", False),
    "YUANJIAO_TOKEN_DAYS": ("30", 30),
    "YUANJIAO_SCREEN_TOKEN_DAYS": ("180", 180),
    "YUANJIAO_LOGIN_MAX_FAILURES": ("7", 7),
    "YUANJIAO_LOGIN_MAX_FAILURES_PER_IP": ("40", 40),
    "YUANJIAO_LOGIN_LOCK_FAILURES": ("30", 30),
    "YUANJIAO_LOGIN_LOCK_FAILURES_PER_IP": ("200", 200),
    "YUANJIAO_LOGIN_LOCK_SECONDS": ("600", 600),
    "YUANJIAO_LOGINS_PER_MINUTE": ("12", 12),
    "YUANJIAO_ICS_MAX_EVENTS": ("500", 500),
    "YUANJIAO_SECURE_COOKIES": ("1", True),
    "YUANJIAO_PROXY_FIX": ("true", True),
    "YUANJIAO_IMPORTS_PER_MINUTE": ("3", 3),
    "YUANJIAO_QR_CHECKINS_PER_MINUTE": ("4", 4),
    "YUANJIAO_CORS_ORIGINS": ("https://a.example/, https://b.example",
                              ["https://a.example", "https://b.example"]),
}


def test_every_setting_has_a_sample():
    assert set(SAMPLES) == set(config.SETTINGS)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_is_read_from_the_environment(name, monkeypatch, tmp_path):
    raw, expected = SAMPLES[name]
    monkeypatch.setenv(name, raw)
    assert config.from_environment()[name] == expected
    # The app reads it too, unless the test overrides (which win) set it themselves.
    overrides = {"TESTING": True, "SECRET_KEY": "x", "YUANJIAO_MEDIA": "off",
                 "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'c.sqlite3'}"}
    if name != "YUANJIAO_AUTO_MIGRATE":
        overrides["YUANJIAO_AUTO_MIGRATE"] = False
    app = create_app(overrides)
    if name not in overrides:
        assert app.config[name] == expected
        typed = getattr(config.settings(app), _field(name))
        assert typed == (tuple(expected) if isinstance(expected, list) else expected)
        assert type(typed) is (tuple if isinstance(expected, list) else type(expected))


def _field(name: str) -> str:
    return name.removeprefix("YUANJIAO_").lower()


def test_settings_fields_are_the_settings():
    assert [config.setting_name(f.name) for f in dataclasses.fields(config.Settings)] == \
        list(config.SETTINGS)


def test_settings_defaults_overrides_and_frozen(tmp_path, monkeypatch):
    monkeypatch.setenv("YUANJIAO_HORIZON_DAYS", "100")
    monkeypatch.setenv("YUANJIAO_TOKEN_DAYS", "30")
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "YUANJIAO_MEDIA": "off",
                      "YUANJIAO_AUTO_MIGRATE": False, "YUANJIAO_TOKEN_DAYS": 7,
                      "YUANJIAO_MEDIA_NODES": ["http://n:1"],
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'c.sqlite3'}"})
    settings = config.settings(app)
    assert app.extensions["settings"] is settings
    # Defaults, then the environment, then the overrides.
    assert settings.makeup_share == 0.9
    assert settings.horizon_days == 100
    assert settings.token_days == 7
    assert settings.media_nodes == ("http://n:1",)
    assert settings.recordings_dir == str(Path(app.instance_path) / "recordings")
    assert settings.default_timezone == DEFAULT_TZ
    with app.app_context():
        assert config.settings() is settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.token_days = 8  # type: ignore[misc]
    # Tests change a running app's settings by replacing them, config alike.
    changed = config.replace_settings(app, token_days=3, cors_origins=("https://a.example",))
    assert config.settings(app) is changed
    assert changed.token_days == 3
    assert settings.token_days == 7
    assert app.config["YUANJIAO_TOKEN_DAYS"] == 3
    assert app.config["YUANJIAO_CORS_ORIGINS"] == ["https://a.example"]


def test_socketio_ping_interval_reaches_engineio(tmp_path):
    """YUANJIAO_SOCKETIO_PING_INTERVAL is the interval the Engine.IO server pings at."""
    from extensions import socketio

    create_app({"TESTING": True, "SECRET_KEY": "x", "YUANJIAO_MEDIA": "off",
                "YUANJIAO_AUTO_MIGRATE": False, "YUANJIAO_SOCKETIO_PING_INTERVAL": 45,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'p.sqlite3'}"})
    assert socketio.server.eio.ping_interval == 45


def test_settings_coerce_config_values():
    built = config.Settings.from_config({"YUANJIAO_PORT": "81", "YUANJIAO_DEMO": "off",
                                         "YUANJIAO_MAKEUP_SHARE": 1,
                                         "YUANJIAO_ADMIN_USERNAME": None,
                                         "YUANJIAO_JANUS_EDGES": ["http://e"]})
    assert built.port == 81
    assert built.demo is False
    assert built.makeup_share == 1.0
    assert isinstance(built.makeup_share, float)
    assert built.admin_username is None
    assert built.janus_edges == ("http://e",)
    assert config.Settings.from_config({}) == config.Settings()


def test_every_default_is_in_the_app_config(tmp_path):
    defaults = config.default_config(str(tmp_path))
    for name, (default, _parse) in config.SETTINGS.items():
        assert name in defaults
        if default is not None:
            assert defaults[name] == default
    assert defaults["BABEL_DEFAULT_TIMEZONE"] == defaults["YUANJIAO_DEFAULT_TIMEZONE"]


def _string_constants(path: Path, value: str) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sum(isinstance(n, ast.Constant) and n.value == value for n in ast.walk(tree))


def test_the_default_zone_is_written_once():
    files = list(ROOT.glob("*.py")) + [
        p for d in ("core", "accounts", "org", "sessions", "video", "attendance")
        for p in (ROOT / d).rglob("*.py")]
    where = {str(p.relative_to(ROOT)): n for p in files
             if (n := _string_constants(p, "Asia/Shanghai"))}
    assert where == {"core/timeutil.py": 1}
