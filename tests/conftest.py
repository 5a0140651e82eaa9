"""Fixtures: an app on a fresh database per test, clients, factories, a live server, a browser.

The database is a temporary SQLite file per test by default. With
YUANJIAO_TEST_DATABASE_URL=postgresql+psycopg://... each xdist worker gets its own
PostgreSQL database, created for the run and dropped after it; tables are emptied
between tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app import create_app
from extensions import db, socketio

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("YUANJIAO_TEST_DATABASE_URL", "")


# --- database --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url_base(tmp_path_factory, worker_id) -> Iterator[str | None]:
    """For PostgreSQL, a database of this worker's own; None for SQLite."""
    if not PG_URL:
        yield None
        return
    name = f"yj_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def app_config(tmp_path, database_url_base) -> dict:
    """Overrides for a test app; a test may change them before `app` is built."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": database_url_base or f"sqlite:///{tmp_path / 'test.sqlite3'}",
        "YUANJIAO_AUTO_MIGRATE": False,
        "YUANJIAO_DEMO": False,
        "YUANJIAO_MEDIA": "off",
        "YUANJIAO_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "YUANJIAO_HLS_DIR": str(tmp_path / "hls"),
        "WTF_CSRF_ENABLED": False,
    }


class IsolatedClient(FlaskClient):
    """A test client whose every request runs in a fresh app context.

    The `app` fixture keeps an app context pushed for the test's own service calls; Flask
    would reuse it for requests, sharing `g` (the logged-in user, the API principal) and
    the database session between the test and its requests. A real server never does.
    Commit in the test before a request should see the data (factory.headers commits).
    """

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


class IsolatedSocketClient:
    """Flask-SocketIO's test client, each call in a fresh app context (see IsolatedClient)."""

    def __init__(self, app, **kwargs) -> None:
        self._app = app
        with app.app_context():
            self._client = socketio.test_client(app, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._app.app_context():
                return attr(*args, **kwargs)

        return call


@pytest.fixture
def app(app_config):
    """A Flask app on an empty database with every table created."""
    app = create_app(app_config)
    app.test_client_class = IsolatedClient
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        if app_config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
            tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
            with db.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.engine.dispose()


@pytest.fixture
def db_session(app):
    """The app's SQLAlchemy session, inside the app context."""
    return db.session


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def socket_client_factory(app, client):
    """Make Flask-SocketIO test clients: factory(namespace=..., auth=..., flask_client=...).

    Each call of a client runs in a fresh app context, as on a real server."""
    made = []

    def make(namespace: str | None = None, auth: dict | None = None, flask_client=None):
        sc = IsolatedSocketClient(app, namespace=namespace, auth=auth,
                                  flask_test_client=flask_client or client)
        made.append(sc)
        return sc

    yield make
    for sc in made:
        if sc.is_connected():
            sc.disconnect()


# --- factories -------------------------------------------------------------------------


class Factory:
    """Small builders for domain rows; each flushes and returns the row."""

    def __init__(self, session) -> None:
        self.session = session
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def org_unit(self, name: str | None = None, kind: str = "branch", parent=None):
        from org.models import OrgUnit

        unit = OrgUnit(name=name or f"支部{self._next()}", kind=kind,
                       parent_id=parent.id if parent else None)
        self.session.add(unit)
        self.session.flush()
        unit.path = (parent.path if parent else "/") + f"{unit.id}/"
        self.session.flush()
        return unit

    def site(self, org_unit, name: str | None = None, timezone: str = "Asia/Shanghai"):
        from org.models import Site

        site = Site(name=name or f"学习点{self._next()}", org_unit_id=org_unit.id,
                    timezone=timezone)
        self.session.add(site)
        self.session.flush()
        return site

    def member(self, org_unit, site=None, name: str | None = None, category: str = "full"):
        from org.models import Member

        n = self._next()
        member = Member(name=name or f"党员{n}", member_no=f"M{n:05d}", org_unit_id=org_unit.id,
                        home_site_id=site.id if site else None, category=category)
        self.session.add(member)
        self.session.flush()
        return member

    def user(self, role: str = "admin", *, username: str | None = None,
             password: str = "password123", **scope):
        from werkzeug.security import generate_password_hash

        from accounts.service import create_user

        # Created through the service with a policy-compliant password, then given the
        # test's own (tests log in with short, well-known ones; the policy has its tests).
        user = create_user(self.session, username=username or f"{role}{self._next()}",
                           password="Factory-pass-2026", role=role, **scope)
        user.password_hash = generate_password_hash(password, method="pbkdf2:sha256:1000")
        self.session.flush()
        return user

    def token(self, user) -> str:
        from accounts.service import issue_token

        return issue_token(self.session, user)

    def headers(self, user) -> dict[str, str]:
        """Authorization headers for `user` (commits, so the request sees the token)."""
        token = self.token(user)
        self.session.commit()
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def factory(db_session) -> Factory:
    return Factory(db_session)


# --- a real server, and a real browser ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`python app.py` (or the production gunicorn with its gevent worker) in a
    subprocess, on its own port and database."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 gunicorn: bool = False) -> None:
        self.gunicorn = gunicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_URL": f"sqlite:///{tmp / 'live.sqlite3'}",
            "YUANJIAO_PORT": str(self.port),
            "YUANJIAO_ADMIN_USERNAME": "admin",
            "YUANJIAO_ADMIN_PASSWORD": "admin-password",
            "YUANJIAO_DEMO": "0",
            "YUANJIAO_RECORDINGS_DIR": str(tmp / "recordings"),
            "YUANJIAO_SECRET_KEY": "live-test-secret",
        })
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "server.log"

    def start(self) -> LiveServer:
        with self.log.open("ab") as log:
            command = [sys.executable, str(ROOT / "app.py")]
            if self.gunicorn:
                command = [sys.executable, "-m", "gunicorn", "--config",
                           str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT),
                           "--bind", f"127.0.0.1:{self.port}"]
            self.proc = subprocess.Popen(command, cwd=str(self.tmp), env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/login", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int | None = None) -> None:
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def token(self, username: str = "admin", password: str = "admin-password") -> str:
        r = requests.post(self.url + "/api/v1/auth/token",
                          json={"username": username, "password": password}, timeout=10)
        r.raise_for_status()
        return r.json()["token"]

    def api(self, method: str, path: str, token: str, **kw) -> requests.Response:
        return requests.request(method, self.url + path,
                                headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw)


@pytest.fixture
def live_server_factory(tmp_path) -> Iterator:
    """Start servers with extra env: factory(env={...}, gunicorn=False) -> LiveServer
    (stopped at teardown)."""
    servers: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, gunicorn: bool = False) -> LiveServer:
        server = LiveServer(tmp_path, env, gunicorn).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(live_server_factory) -> LiveServer:
    """A live server with the in-process media engine."""
    return live_server_factory({"YUANJIAO_MEDIA": "inprocess"})


CHROMIUM = os.environ.get("YUANJIAO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium with fake camera and microphone.

    Module-scoped: Playwright's sync API keeps an asyncio loop in the main thread while
    it runs, which would break later tests that start their own loop.

    In CI a missing Chromium is an error, never a silent skip (.ci/run installs it).
    """
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run should install it")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_for_js(page, expression: str, timeout: float = 10_000) -> None:
    """Poll `expression` (an expression or an arrow function) until it is truthy.

    Not page.wait_for_function: that compiles its predicate with eval inside the page,
    which the app's Content-Security-Policy (no 'unsafe-eval') refuses; page.evaluate
    goes through the DevTools protocol and is not subject to the page's CSP.
    """
    import time

    deadline = time.monotonic() + timeout / 1000
    call = f"({expression})()" if expression.lstrip().startswith("()") else expression
    while True:
        if page.evaluate(call):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} ms: {expression}")
        page.wait_for_timeout(100)


def login_page(page, base_url: str, username: str, password: str) -> None:
    """Log in through the real form."""
    page.goto(base_url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def stop_client_loop(loop, thread) -> None:
    """Stop a test's client asyncio loop (run forever in `thread`) and close it cleanly.

    The aiortc peers a test drives leave tasks and UDP transports behind (ICE consent
    checks, DTLS readers), even after `close()`; closed with the loop they were garbage
    collected later, in whatever test ran then, as an unclosed-socket warning. Here their
    tasks are cancelled and every transport of the loop is closed while it still runs.
    """
    import asyncio

    async def close_all() -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.sleep(0.05)
        for transport in list(getattr(loop, "_transports", {}).values()):
            transport.close()
        await asyncio.sleep(0.05)  # connection_lost: the sockets close

    try:
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
