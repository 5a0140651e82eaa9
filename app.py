"""Yuanjiao (远教): the app factory and the entry point of the embedded default.

    python app.py            # migrate, seed demo data on first start, serve on :5000
    flask --app app ...      # CLI: db upgrade, create-admin, import-members, seed-demo

In production the same factory runs under gunicorn with one gevent worker per process
(`make serve`, docs/deployment.md): thousands of idle room screens and viewers then
cost a greenlet each instead of four threads. gevent's monkey-patching does not mix with
aiortc's loop, so such a process reaches media through `python -m video.node`.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, render_template, request, session
from flask_babel import lazy_gettext as _l
from flask_login import current_user

import config
from core.api import api, http_error_payload, is_api_request
from core.errors import DomainError
from core.gctune import start_gc_upkeep, tune_gc
from core.rediskeys import redis_prefix
from core.socketqueue import BatchedRedisManager
from extensions import babel, csrf, db, login_manager, migrate, socketio

log = logging.getLogger(__name__)

#: Domain packages whose views.py has `init_app(app)`; events.py, where present, too.
DOMAINS = ("accounts", "org", "sessions", "attendance", "video")


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then `overrides` (tests)."""
    app = Flask(__name__, instance_relative_config=True)
    from core.converters import BoundedIntegerConverter

    app.url_map.converters["int"] = BoundedIntegerConverter
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(config.default_config(app.instance_path))
    app.config.update(config.from_environment())
    if overrides:
        app.config.update(overrides)
    settings = config.init_settings(app)  # typed and frozen: config.settings()
    if settings.secure_cookies:  # served over HTTPS
        app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = True
    if settings.proxy_fix:  # behind nginx: client address and scheme
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path))
    app.config["YUANJIAO_ASYNC_MODE"] = async_mode()
    _check_media_placement(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault(
            "connect_args", {"timeout": 30, "check_same_thread": False}
        )
    else:
        # A database restart closes every pooled connection: test each one as it is taken
        # from the pool, so the first request after the restart reconnects instead of
        # failing (one round trip per checkout).
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault("pool_pre_ping", True)

    import models  # noqa: F401  (every table known to metadata and Alembic)

    _init_extensions(app)
    _register_error_handlers(app)
    for name in DOMAINS:
        module = __import__(f"{name}.views", fromlist=["init_app"])
        module.init_app(app)
    for name in DOMAINS:
        try:
            events = __import__(f"{name}.events", fromlist=["init_app"])
        except ModuleNotFoundError as exc:
            if exc.name != f"{name}.events":
                raise
            continue
        events.init_app(app)

    import cli
    from core import health, sockets

    sockets.init_app(app)
    health.init_app(app)

    cli.init_app(app)
    if settings.auto_migrate:
        import bootstrap

        bootstrap.bootstrap(app)
    return app


def async_mode() -> str:
    """"gevent" when this process was monkey-patched by gevent (gunicorn's gevent worker
    patches before it loads the app), else "threading" (`python app.py`, tests)."""
    try:
        from gevent import monkey
    except ImportError:
        return "threading"
    return "gevent" if monkey.is_module_patched("socket") else "threading"


def socketio_channel(config: Any) -> str:
    """Socket.IO's Redis channel: YUANJIAO_SOCKETIO_CHANNEL, else the deployment's own."""
    return config.get("YUANJIAO_SOCKETIO_CHANNEL") or f"{redis_prefix(config)}:socketio"


def start_jobs(app: Flask) -> None:
    """The scheduled work of a serving process (`python app.py`, each gunicorn worker):
    open-ended recurrences materialized ahead once a day (sessions/jobs.py), and the
    collector's upkeep, its full collections at moments without a roll call
    (core/gctune.py)."""
    from attendance.presence import site_counts
    from attendance.writer import writer_quiet
    from sessions.jobs import start_horizon_job

    site_counts(app)  # counted among the web processes alive from the start
    start_horizon_job(app)
    start_gc_upkeep(lambda: writer_quiet(app))


def _check_media_placement(app: Flask) -> None:
    """Refuse at start, not at the first broadcast, an in-process engine under gevent."""
    settings = config.settings(app)
    if (app.config["YUANJIAO_ASYNC_MODE"] == "gevent" and not settings.media_nodes
            and settings.media == "inprocess"):
        raise RuntimeError(
            "gevent worker: the in-process media engine (aiortc) cannot run beside gevent; "
            "set YUANJIAO_MEDIA_NODES to one or more `python -m video.node` addresses, "
            "or YUANJIAO_MEDIA=off for a process without live video")


def _instance_secret(instance: Path) -> str:
    """A secret key kept under instance/, so sessions and feed tokens survive restarts."""
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _init_extensions(app: Flask) -> None:
    from core import authepoch

    db.init_app(app)
    authepoch.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from sqlalchemy import event

        with app.app_context():

            @event.listens_for(db.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record) -> None:
                # WAL lets readers go on while attendance is written; NORMAL is durable
                # across an app crash (only a power loss may lose the last commit).
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = None
    from accounts import throttle
    from core import ratelimit

    ratelimit.init_app(app)
    throttle.init_app(app)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_select_locale)
    api.init_app(app)
    redis_url = app.config.get("REDIS_URL")
    socketio.init_app(
        app,
        async_mode=app.config["YUANJIAO_ASYNC_MODE"],
        message_queue=redis_url,
        # Redis as Socket.IO's message queue, a PUBLISH per batch of emits (not per emit);
        # always given, so that an app without Redis never inherits an earlier app's.
        client_manager=BatchedRedisManager(redis_url, channel=socketio_channel(app.config))
        if redis_url else None,
        cors_allowed_origins=None,
        # Threads: run each event on its connection's reader thread (no thread start per
        # event; measured ~25 % less CPU a check-in). gevent: a greenlet per event, so a
        # connection's next event is read while the last waits for its commit; the
        # attendance handlers keep their stored order (attendance/events.py, _Turns).
        async_handlers=app.config["YUANJIAO_ASYNC_MODE"] == "gevent",
        # Connections are many and idle; ping often enough to notice a dead screen.
        ping_interval=app.config["YUANJIAO_SOCKETIO_PING_INTERVAL"],
        ping_timeout=20,
    )

    # Every Socket.IO event runs in a request context made from its connection's environ
    # (path /socket.io/). With no rule matching that path, each event raised and kept a
    # NotFound with its traceback: about 70 objects of cyclic garbage per event, which the
    # collector freed in pauses of 100-250 ms at 2,000 connections. These rules make the
    # match succeed (polling and websocket); they are never served: the Engine.IO
    # middleware answers /socket.io/ before Flask sees it.
    # Browsers ask for /favicon.ico whatever the page links: the same icon, cached a day.
    icon = (Path(app.root_path) / "static" / "img" / "favicon.svg").read_bytes()
    app.add_url_rule("/favicon.ico", endpoint="favicon", methods=["GET"],
                     view_func=lambda: Response(icon, mimetype="image/svg+xml", headers={
                         "Cache-Control": "public, max-age=86400"}))
    app.add_url_rule("/socket.io/", endpoint="socketio_transport",
                     view_func=_socketio_transport, methods=["GET", "POST"])
    app.add_url_rule("/socket.io/", endpoint="socketio_websocket",
                     view_func=_socketio_transport, websocket=True)

    @login_manager.user_loader
    def _load_user(session_token: str):
        """Sessions and remember cookies name the user's current session token (not his
        id): once it is rotated (logout, password, deactivation) they name nobody."""
        from sqlalchemy import select

        from accounts.models import User

        if not session_token or len(session_token) != 64:
            return None
        user = db.session.scalar(select(User).where(User.session_token == session_token))
        return user if user is not None and user.active else None

    @app.context_processor
    def _inject() -> dict[str, Any]:
        from flask_babel import get_locale

        return {"current_locale": str(get_locale()), "languages": app.config["LANGUAGES"]}

    def _can(action: str, resource: Any = None) -> bool:
        """Templates ask the one policy which links and buttons to show."""
        from core import policy

        return policy.can(current_user, action, resource)

    app.jinja_env.globals["can"] = _can


def _socketio_transport():
    """Only reached if the Engine.IO middleware is bypassed: there is nothing here."""
    from flask import abort

    abort(404)


def _select_locale() -> str:
    """Chinese unless the user chose English (his profile, ?lang=, or the session)."""
    lang = request.args.get("lang")
    if lang in ("zh", "en"):
        session["lang"] = lang
        return lang
    if current_user and getattr(current_user, "is_authenticated", False) and current_user.locale:
        return current_user.locale
    return session.get("lang", "zh")


#: No inline scripts (pages load theirs from /static; JSON config blocks are data, not
#: code); no framing; styles may be inline (a few style attributes); media from blobs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
#: Swagger UI's page (flask-smorest's template) starts itself with an inline script.
CSP_API_DOCS = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")


def _security_headers(response):
    """Headers every answer carries; `Server` names no versions."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")  # tokens in URLs stay here
    headers.setdefault("X-Frame-Options", "DENY")
    docs = request.path.startswith("/api/docs")
    headers.setdefault("Content-Security-Policy", CSP_API_DOCS if docs else CSP)
    headers["Server"] = "Yuanjiao"
    return response


def _refuse_large_bodies() -> None:
    """413 from the declared length, before anything reads the body (or checks a login):
    werkzeug would only refuse once a view reads it. Chunked bodies without a length are
    cut at the same limit by werkzeug as they are read."""
    from flask import abort, current_app

    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and request.content_length is not None and request.content_length > limit:
        abort(413)


def _register_error_handlers(app: Flask) -> None:
    app.before_request(_refuse_large_bodies)
    app.after_request(_security_headers)

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError):
        db.session.rollback()
        headers = {}
        if error.status == 429 and error.details.get("retry_after"):
            headers["Retry-After"] = str(error.details["retry_after"])
        if is_api_request() or request.accept_mimetypes.best == "application/json":
            return jsonify(error.to_dict()), error.status, headers
        return render_template("error.html", error=error), error.status, headers

    from flask_limiter import RateLimitExceeded

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded):
        from core import ratelimit

        return _domain_error(ratelimit.as_domain_error(error))

    from sqlalchemy.exc import DataError

    @app.errorhandler(OverflowError)
    @app.errorhandler(DataError)
    def _out_of_range(error: Exception):
        """A number or date past what Python or the database can hold (an id of 2^64, a
        date in the year 9999 moved by its offset): the caller's input, so 422."""
        from core.errors import ValidationError

        log.info("out-of-range input on %s: %s", request.path, error)
        return _domain_error(ValidationError("数值或日期超出允许范围", code="out_of_range"))

    @app.errorhandler(500)
    def _server_error(error):
        db.session.rollback()
        log.exception("unhandled error on %s", request.path)
        if is_api_request():
            return jsonify({"error": "internal_error", "message": str(_l("服务器内部错误")),
                            "details": {}}), 500
        return render_template("error.html", error=None), 500

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        if is_api_request():
            return jsonify(http_error_payload(error)), 400
        return render_template("error.html", error=None, message=error.description), 400


def main() -> None:
    """`python app.py`: the embedded default, on YUANJIAO_HOST:YUANJIAO_PORT."""
    logging.basicConfig(level=os.environ.get("YUANJIAO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    tune_gc()
    start_jobs(app)
    host, port = config.settings(app).host, config.settings(app).port
    log.info("Yuanjiao serving at http://%s:%s", host, port)
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, use_reloader=False)


if __name__ == "__main__":
    main()
