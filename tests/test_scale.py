"""Two real web processes (gunicorn, gevent) on one database and one Redis: what one
process accepts reaches sockets held by the other, and a site is online while any of its
connections, on either process, remains."""

from __future__ import annotations

import datetime as dt
import queue
import subprocess
import time
import uuid

import pytest
import redis
import requests
import socketio as socketio_client
import socketio as socketio_server

from attendance.presence import (
    PROCESS_TTL_SECONDS,
    LocalSiteCounts,
    RedisMediaSessions,
    RedisSiteCounts,
)
from core.socketqueue import BatchedRedisManager

REDIS_URL = "redis://127.0.0.1:6379/0"
NS = "/attendance"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the machine's service; CI starts it
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


def _world(server) -> dict:
    """A live occurrence at one site, one member, an admin and a screen token."""
    token = server.token("admin", "admin-password")

    def call(method, path, **kw):
        r = server.api(method, path, token, **kw)
        assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
        return r.json()

    unit = call("POST", "/api/v1/org-units", json={"name": "党委", "kind": "committee",
                                                    "parent_id": None})
    site = call("POST", "/api/v1/sites", json={"name": "一工区会议室", "org_unit_id": unit["id"],
                                               "timezone": "Asia/Shanghai"})
    member = call("POST", "/api/v1/members", json={
        "name": "王建国", "member_no": "DY0001", "org_unit_id": unit["id"],
        "home_site_id": site["id"], "category": "full"})
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(microsecond=0)
    session = call("POST", "/api/v1/sessions", json={
        "title": "党史学习", "kind": "party_history_lecture",
        "starts_at": start.isoformat(), "duration_minutes": 90, "timezone": "Asia/Shanghai",
        "site_ids": [site["id"]], "org_unit_ids": [unit["id"]]})
    [occurrence] = call("GET", f"/api/v1/sessions/{session['id']}/occurrences")
    screen = call("POST", f"/api/v1/sites/{site['id']}/screen-tokens")["token"]
    return {"token": token, "site_id": site["id"], "member_id": member["id"],
            "occurrence_id": occurrence["id"], "screen": screen}


class Sock:
    """A Socket.IO client on /attendance that queues what it receives."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue = queue.Queue()
        self.client = socketio_client.Client(reconnection=False)
        self.client.on("site:status", self._on("site:status"), namespace=NS)
        # A room's updates come as lists (attendance:updates): queued one by one.
        self.client.on("attendance:updates", lambda data: [
            self.events.put(("attendance:update", u)) for u in data["updates"]], namespace=NS)
        self.client.connect(url, namespaces=[NS], transports=["websocket"],
                            auth={"token": token}, wait_timeout=10)

    def _on(self, name: str):
        return lambda data: self.events.put((name, data))

    def call(self, event: str, data: dict) -> dict:
        return self.client.call(event, data, namespace=NS, timeout=15)

    def wait_for(self, name: str, match, timeout: float = 10.0) -> dict:
        seen = []
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while dt.datetime.now() < deadline:
            try:
                got, data = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append((got, data))
            if got == name and match(data):
                return data
        raise AssertionError(f"no {name} matching; received {seen}")

    def nothing(self, name: str, wait: float) -> list:
        out = []
        deadline = dt.datetime.now() + dt.timedelta(seconds=wait)
        while dt.datetime.now() < deadline:
            try:
                got, data = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if got == name:
                out.append(data)
        return out

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


@pytest.mark.live
def test_two_processes_share_checkins_and_site_presence(live_server_factory, redis_url):
    env = {"YUANJIAO_MEDIA": "off", "REDIS_URL": redis_url}
    # Both on the same database file (the factory's tmp folder) and the same Redis.
    a = live_server_factory(env, gunicorn=True)
    b = live_server_factory(env, gunicorn=True)
    assert a.port != b.port
    w = _world(a)
    occ, site = w["occurrence_id"], w["site_id"]
    ref = {"occurrence_id": occ, "site_id": site}
    socks: list[Sock] = []
    try:
        dashboard = Sock(b.url, b.token())  # an organizer's dashboard on process B
        socks.append(dashboard)
        assert dashboard.call("dashboard:join", {"occurrence_id": occ})["ok"]

        screen = Sock(a.url, w["screen"])  # the room screen on process A
        socks.append(screen)
        assert screen.call("site:join", ref)["ok"]
        dashboard.wait_for("site:status", lambda d: d["site_id"] == site and d["online"])

        operator = Sock(b.url, w["token"])  # the site's operator page on process B
        socks.append(operator)
        assert operator.call("site:join", ref)["ok"]

        # A check-in accepted by A shows on the dashboard connected to B.
        ack = screen.call("roll_call:mark", {**ref, "member_ids": [w["member_id"]],
                                             "state": "present",
                                             "event_id": uuid.uuid4().hex})
        assert ack["ok"], ack
        assert ack["stored"] == 1, ack
        update = dashboard.wait_for("attendance:update",
                                    lambda d: d["member_id"] == w["member_id"])
        assert update["present"] is True
        assert update["site_id"] == site

        # The screen on A leaves: the operator on B still holds the site, so it stays
        # online (no offline status, no site_offline stored).
        screen.close()
        assert [d for d in dashboard.nothing("site:status", 2.0)
                if not d["online"]] == []
        snap = dashboard.call("dashboard:join", {"occurrence_id": occ})["snapshot"]
        mine = next(s for s in snap["sites"] if s["site_id"] == site)
        assert mine["online"] is True, mine

        # The operator leaves too: now the site is offline, said once to the dashboard.
        operator.close()
        dashboard.wait_for("site:status", lambda d: d["site_id"] == site and not d["online"])
        snap = dashboard.call("dashboard:join", {"occurrence_id": occ})["snapshot"]
        mine = next(s for s in snap["sites"] if s["site_id"] == site)
        assert mine["online"] is False, mine
    finally:
        for sock in socks:
            sock.close()


class _Seen(BatchedRedisManager):
    """The real manager, keeping the emits it delivers to its own sockets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delivered: list[tuple[str, object, str]] = []

    def _handle_emit(self, message) -> None:
        self.delivered.append((message["event"], message["data"][0], message["host_id"]))
        super()._handle_emit(message)


def test_batched_queue_delivers_every_emit_in_order_in_fewer_publishes(redis_url):
    """A burst of emits in one process reaches another in order, in fewer PUBLISHes than
    emits; the emitting process delivers each once (not again when its batch comes back)."""
    channel = f"yuanjiao-test-{uuid.uuid4().hex}"
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    a, b = _Seen(redis_url, channel=channel), _Seen(redis_url, channel=channel)
    servers = [socketio_server.Server(async_mode="threading", client_manager=m) for m in (a, b)]
    try:
        for server in servers:  # as at a server's first connection
            server.manager_initialized = True
            server.manager.initialize()
        time.sleep(0.5)  # both listeners subscribed
        for i in range(50):
            servers[0].emit("tick", i, to="room", namespace="/attendance")
        deadline = time.monotonic() + 10
        while len(b.delivered) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [d[1] for d in b.delivered] == list(range(50))
        assert {d[2] for d in b.delivered} == {a.host_id}
        time.sleep(0.3)
        assert [d[1] for d in a.delivered] == list(range(50))  # once each, none echoed
        publishes = 0
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if listener.get_message(timeout=0.1) is not None:
                publishes += 1
        assert 1 <= publishes < 50
    finally:
        listener.close()  # the managers' listeners are daemon threads on a channel of their own


def test_each_deployment_has_a_socketio_channel_of_its_own():
    """Two deployments on one Redis (or two tests at once) never hear each other's rooms,
    where ids repeat: the channel follows the key prefix unless one is given."""
    from app import socketio_channel

    a = {"SQLALCHEMY_DATABASE_URI": "postgresql://db/a", "YUANJIAO_SOCKETIO_CHANNEL": ""}
    b = {**a, "SQLALCHEMY_DATABASE_URI": "postgresql://db/b"}
    assert socketio_channel(a) != socketio_channel(b)
    assert socketio_channel(a) == socketio_channel(dict(a))  # its processes share it
    assert socketio_channel({**a, "YUANJIAO_REDIS_PREFIX": "oilfield"}) == "oilfield:socketio"
    assert socketio_channel({**a, "YUANJIAO_SOCKETIO_CHANNEL": "bench"}) == "bench"


def test_local_counts_without_redis():
    counts = LocalSiteCounts()
    assert counts.add((1, 2)) == 1
    assert counts.add((1, 2)) == 2
    assert counts.remove((1, 2)) == 1
    assert counts.remove((1, 2)) == 0
    assert counts.count((1, 2)) == 0


def test_redis_counts_span_processes_and_forget_a_dead_one(redis_url):
    prefix = f"yuanjiao-test:{uuid.uuid4().hex}"
    a, b = RedisSiteCounts(redis_url, prefix), RedisSiteCounts(redis_url, prefix)
    try:
        assert a.add((7, 3)) == 1
        assert b.add((7, 3)) == 2  # a screen on one process, an operator on the other
        assert a.remove((7, 3)) == 1  # the other's connection keeps the site online
        assert a.count((7, 3)) == 1
        a._renew()  # (every 10 s) the processes alive are counted
        assert a.processes == 2
        b.close()  # B was killed: its liveness key is gone, its count no longer counts
        assert a.count((7, 3)) == 0
        a._renew()
        assert a.processes == 1
        # A process killed without closing stops counting once its renewal is too old.
        r = redis.Redis.from_url(redis_url)
        r.zadd(f"{prefix}:procs", {"killed": time.time() - PROCESS_TTL_SECONDS - 1,
                                   "renewed": time.time() - 1})
        a._renew()
        assert a.processes == 2
        assert a.add((7, 3)) == 1
    finally:
        a.close()
        b.close()
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


def test_the_writer_lingers_longer_the_more_processes_share_the_load(app, redis_url):
    """n processes each get 1/n of the check-ins: each writer waits n x its linger for a
    batch (at most 4 x), so that the database sees batches of one process's size."""
    from attendance.writer import MAX_COMMIT_WAIT, MAX_SPREAD, GroupWriter, Request
    from core.types import utcnow

    prefix = f"yuanjiao-test:{uuid.uuid4().hex}"
    counts = [RedisSiteCounts(redis_url, prefix) for _ in range(MAX_SPREAD + 2)]
    try:
        writer = GroupWriter(app)
        check_in, heartbeat = Request([], utcnow()), Request([], utcnow(), linger=0.25)
        assert writer._linger(check_in) == writer.linger  # no shared counts: alone
        app.extensions["attendance_site_count"] = counts[0]
        counts[0]._renew()
        assert writer._linger(check_in) == pytest.approx(MAX_SPREAD * writer.linger)
        assert writer._linger(heartbeat) == 0.25  # a request's own linger is its own
        for other in counts[3:]:
            other.close()
        counts[0]._renew()
        assert writer._linger(check_in) == pytest.approx(3 * writer.linger)
        # Each of three writers gets a third of the check-ins and also waits for what the
        # other two's commits take (their batches then hold what one writer's would).
        writer.commit_seconds = 0.006
        assert writer._linger(check_in) == pytest.approx(3 * writer.linger + 2 * 0.006)
        writer.commit_seconds = 5.0  # a database this slow: counted at most MAX_COMMIT_WAIT
        assert writer._linger(check_in) == pytest.approx(3 * writer.linger
                                                         + 2 * MAX_COMMIT_WAIT)
        for other in counts[1:3]:
            other.close()
        counts[0]._renew()
        assert writer._linger(check_in) == writer.linger  # alone: no other commits to wait
    finally:
        app.extensions.pop("attendance_site_count", None)
        for c in counts:
            c.close()
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


# --- Redis away ----------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which the test may stop and start again."""
    from tests.conftest import free_port

    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        for _ in range(50):
            try:
                redis.Redis(port=port).ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    yield {"url": f"redis://127.0.0.1:{port}/0", "start": start, "stop": stop}
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_redis_counts_go_on_alone_while_redis_is_away_and_share_again(own_redis):
    a = RedisSiteCounts(own_redis["url"], "t")
    b = RedisSiteCounts(own_redis["url"], "t")
    try:
        assert a.add((1, 1)) == 1
        assert b.add((1, 1)) == 2
        own_redis["stop"]()
        # Each process counts its own connections: nothing fails, A's site is offline for A.
        assert a.remove((1, 1)) == 0
        assert a.degraded
        assert b.add((1, 2)) == 1
        own_redis["start"]()  # an empty Redis: the processes put their own counts back
        assert b.count((1, 1)) == 1
        assert not b.degraded
        assert a.add((1, 1)) == 2
        assert a.count((1, 2)) == 1
    finally:
        a.close()
        b.close()


def test_media_sessions_are_known_to_every_process(own_redis):
    """A member's WebRTC session reported to process A (polling the node) lets his
    heartbeats count on process B, which started polling later; Redis away: each process
    answers from what it saw."""
    a = RedisMediaSessions(own_redis["url"], "t")
    b = RedisMediaSessions(own_redis["url"], "t")
    a.joined(5, 9, "r1")
    assert b.holds(5, 9)
    assert not b.holds(5, 10)
    b.joined(5, 9, "r1")  # both processes poll the node: the same join twice is one
    a.left(5, 9, "r1")
    assert not b.holds(5, 9)  # one leave ends it for both
    b.left(5, 9, "r1")
    a.joined(5, 9, "r2")  # B was not polling yet when r2 connected
    assert b.holds(5, 9)
    own_redis["stop"]()
    assert a.holds(5, 9)  # Redis away: A answers from what it saw
    assert not b.holds(5, 9)  # and B from what it saw


def test_an_hls_session_seen_by_one_process_counts_on_another_until_it_lapses(own_redis):
    """A member's segment requests reach process A (behind nginx); his heartbeat socket is
    on process B. The session is a Redis key that lapses without further fetches."""
    a = RedisMediaSessions(own_redis["url"], "t")
    b = RedisMediaSessions(own_redis["url"], "t")
    assert not b.holds(6, 9)
    a.fetched(6, 9, 30)
    assert b.holds(6, 9)
    assert not b.holds(6, 10)
    a.fetched(6, 11, 0.05)  # a session this short lapses at once without fetches
    assert b.holds(6, 11)
    for _ in range(50):
        if not b.holds(6, 11):
            break
        time.sleep(0.01)
    assert not b.holds(6, 11)
    assert b.holds(6, 9)


@pytest.mark.live
def test_redis_down_a_single_process_keeps_working_and_says_degraded(live_server_factory):
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = live_server_factory({"YUANJIAO_MEDIA": "off", "REDIS_URL": dead}, gunicorn=True)
    health = requests.get(server.url + "/api/health", timeout=10).json()
    assert health == {"ok": True, "degraded": True, "redis": "down"}
    login = requests.get(server.url + "/login", timeout=10)
    assert 'id="service-degraded"' in login.text
    w = _world(server)
    occ, site = w["occurrence_id"], w["site_id"]
    ref = {"occurrence_id": occ, "site_id": site}
    socks: list[Sock] = []
    try:
        dashboard = Sock(server.url, w["token"])
        socks.append(dashboard)
        assert dashboard.call("dashboard:join", {"occurrence_id": occ})["ok"]
        screen = Sock(server.url, w["screen"])
        socks.append(screen)
        assert screen.call("site:join", ref)["ok"]
        dashboard.wait_for("site:status", lambda d: d["site_id"] == site and d["online"])
        ack = screen.call("roll_call:mark", {**ref, "member_ids": [w["member_id"]],
                                             "state": "present",
                                             "event_id": uuid.uuid4().hex})
        assert ack["ok"], ack
        assert ack["stored"] == 1, ack
        dashboard.wait_for("attendance:update", lambda d: d["member_id"] == w["member_id"])
        screen.close()
        dashboard.wait_for("site:status", lambda d: d["site_id"] == site and not d["online"])
    finally:
        for sock in socks:
            sock.close()


def test_health_without_redis(client):
    assert client.get("/api/health").json == {"ok": True, "degraded": False, "redis": "off"}


# --- the database restarts ---------------------------------------------------------------

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def own_pg_database():
    """A PostgreSQL database of this test's own (its connections may be cut)."""
    psycopg = pytest.importorskip("psycopg")
    name = f"yuanjiao_fault_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield {"name": name, "url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
           "admin": admin}
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = %s", (name,))
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


@pytest.mark.live
def test_database_connections_cut_the_app_reconnects_and_acks_only_commits(
        own_pg_database, live_server_factory, redis_url):
    server = live_server_factory({"YUANJIAO_MEDIA": "off", "REDIS_URL": redis_url,
                                  "DATABASE_URL": own_pg_database["url"]}, gunicorn=True)
    w = _world(server)
    occ, site = w["occurrence_id"], w["site_id"]
    ref = {"occurrence_id": occ, "site_id": site}
    screen = Sock(server.url, w["screen"])
    try:
        assert screen.call("site:join", ref)["ok"]
        assert screen.call("roll_call:mark", {**ref, "member_ids": [w["member_id"]],
                                              "state": "present",
                                              "event_id": uuid.uuid4().hex})["ok"]
        # As a restart would: every connection of the app to its database is closed.
        admin = own_pg_database["admin"]
        cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            (own_pg_database["name"],)).fetchone()[0]
        assert cut >= 1
        # The next request reconnects instead of failing.
        live = server.api("GET", f"/api/v1/occurrences/{occ}/live", w["token"])
        assert live.status_code == 200, live.text
        # A check-in is acknowledged only once committed; a retry with the same event id
        # never stores it twice.
        event_id = uuid.uuid4().hex
        acks = []
        for _ in range(3):
            ack = screen.call("roll_call:mark", {**ref, "member_ids": [w["member_id"]],
                                                 "state": "checked_out",
                                                 "event_id": event_id})
            acks.append(ack)
            if ack.get("ok"):
                break
        assert acks[-1]["ok"], acks
    finally:
        screen.close()
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/{own_pg_database['name']}") as conn:
        rows = conn.execute("SELECT count(*) FROM attendance_events WHERE event_id LIKE %s",
                            (f"{event_id}%",)).fetchone()[0]
    assert rows == 1
