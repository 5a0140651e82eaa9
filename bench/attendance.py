"""Attendance benchmark: a real server, K Socket.IO clients, a burst of M check-ins.

    .venv/bin/python bench/attendance.py                       # SQLite, defaults below
    .venv/bin/python bench/attendance.py --db postgres         # a fresh PostgreSQL database
    .venv/bin/python bench/attendance.py --clients 2000 --checkins 10000 --rate 1000
    .venv/bin/python bench/attendance.py --server threading    # the embedded `python app.py`

It starts the server (by default the production one: gunicorn with one gevent worker,
YUANJIAO_MEDIA=off; `--server threading` runs `python app.py`) on a seeded database, opens
K websocket clients from several asyncio processes (site screens that join their rooms,
and members watching alone who send heartbeats), measures a baseline of no-op `ping`
round trips, then fires M `roll_call:mark` check-ins at the target rate from the site
screens. It prints the throughput, p50/p99 acknowledgement latency, acknowledged events
against rows stored (they must be equal), the server's memory and threads, and the CPU
of the server and of the load generator.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/attendance.py` puts bench/ first on sys.path, where another benchmark's
# calendar.py would shadow the standard library's: look in the project root instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

log = logging.getLogger("bench.attendance")
PG_BASE = "postgresql://postgres@127.0.0.1:5432"


# --- setup ----------------------------------------------------------------------------------


def seed(url: str, *, sites: int, members: int, viewers: int,
         admin_password: str | None = None) -> dict:
    """Schema and data: one branch, `sites` sites, `members` members, a live occurrence,
    a screen token per site and a member user (with token) per viewer."""
    import datetime as dt

    from werkzeug.security import generate_password_hash

    from accounts.models import User
    from accounts.service import issue_site_token, issue_token
    from app import create_app
    from core.types import utcnow
    from extensions import db
    from org.models import Member, OrgUnit, Site
    from sessions.models import Occurrence, StudySession

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "YUANJIAO_AUTO_MIGRATE": False,
                      "YUANJIAO_MEDIA": "off", "SECRET_KEY": "bench", "YUANJIAO_DEMO": False})
    with app.app_context():
        db.create_all()
        s = db.session
        unit = OrgUnit(name="基准支部", kind="branch", path="/")
        s.add(unit)
        s.flush()
        unit.path = f"/{unit.id}/"
        site_rows = [Site(name=f"学习点{i}", org_unit_id=unit.id) for i in range(sites)]
        s.add_all(site_rows)
        s.flush()
        member_rows = [Member(name=f"党员{i}", member_no=f"B{i:06d}", org_unit_id=unit.id,
                              home_site_id=site_rows[i % sites].id) for i in range(members)]
        s.add_all(member_rows)
        s.flush()
        start = utcnow() - dt.timedelta(minutes=5)
        study = StudySession(title="基准测试", kind="party_lesson", starts_at=start,
                             duration_minutes=240)
        study.sites = site_rows
        study.org_units = [unit]
        s.add(study)
        s.flush()
        occ = Occurrence(session_id=study.id, original_start=start, starts_at=start,
                         ends_at=start + dt.timedelta(minutes=240))
        s.add(occ)
        s.flush()
        cheap = generate_password_hash("password123", method="pbkdf2:sha256:1000")
        screen_tokens = [issue_site_token(s, site) for site in site_rows]
        viewer_tokens = []
        for i in range(viewers):
            user = User(username=f"viewer{i}", password_hash=cheap, role="member",
                        display_name=f"viewer{i}", member_id=member_rows[-1 - i].id)
            s.add(user)
            s.flush()
            viewer_tokens.append(issue_token(s, user))
        if admin_password:
            s.add(User(username="admin", role="admin", display_name="admin",
                       password_hash=generate_password_hash(admin_password,
                                                            method="pbkdf2:sha256:1000")))
        s.commit()
        out = {"occurrence_id": occ.id, "site_ids": [x.id for x in site_rows],
               "member_ids": [m.id for m in member_rows], "screen_tokens": screen_tokens,
               "viewer_tokens": viewer_tokens}
        db.session.remove()
        # Settle the database before measuring: statistics for the planner, and the seed's
        # writes checkpointed, so that no checkpoint of the setup competes with the burst.
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if db.engine.dialect.name == "postgresql":
                conn.exec_driver_sql("VACUUM ANALYZE")
                conn.exec_driver_sql("CHECKPOINT")
            else:
                conn.exec_driver_sql("ANALYZE")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        db.engine.dispose()
    return out


def count_check_ins(url: str, occurrence_id: int) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(text("SELECT count(*) FROM attendance_events WHERE occurrence_id = :o "
                             "AND type = 'check_in'"), {"o": occurrence_id})
    engine.dispose()
    return int(n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pid(pid: int, timeout: float = 30.0) -> int:
    """The gunicorn worker under master `pid` (its only child), or `pid` itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += (task / "children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    return pid


def server_command(kind: str, port: int, clients: int) -> list[str]:
    if kind == "threading":
        return [sys.executable, str(ROOT / "app.py")]
    return [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
            "--chdir", str(ROOT), "--workers", "1", "--worker-connections",
            str(max(1000, 2 * clients)), "--bind", f"127.0.0.1:{port}", "--log-level",
            "warning"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def db_cpu_seconds() -> dict[int, float]:
    """pid -> CPU seconds so far, of every PostgreSQL process (empty when there is none)."""
    out: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() in ("postgres", "postmaster"):
                    out[int(proc.name)] = cpu_seconds(int(proc.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def db_cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the PostgreSQL processes spent between two samples (a backend that
    started in between counts from zero; one that ended is lost)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def proc_stats(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process, from /proc."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


# --- client processes -------------------------------------------------------------------------


def client_worker(idx: int, url: str, cfg: dict, ready, go, results) -> None:
    """One process: its share of screens and viewers, then its share of the burst.

    The clients are asyncio ones (one loop per process, no thread per connection), so that
    on a two-core machine the load generator costs less CPU than the server it measures.
    """
    import asyncio

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_client_main(idx, url, cfg, ready, go, results))


async def _client_main(idx: int, url: str, cfg: dict, ready, go, results) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    occ = cfg["occurrence_id"]
    clients: list = []
    screens: list = []
    viewers: list = []
    failures = 0
    http = None
    if cfg.get("lean"):
        from bench import leanio

        http = leanio.session()

    async def connect(token: str):
        if http is not None:  # bench/leanio.py: raw Engine.IO frames, a task per connection
            return await leanio.connect(http, url, "/attendance", token)
        import socketio

        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(url, namespaces=["/attendance"], transports=["websocket"],
                          auth={"token": token}, wait_timeout=60)
        return sio

    async def open_screen(token: str, site_id: int) -> None:
        nonlocal failures
        try:
            sio = await connect(token)
            clients.append(sio)
            ack = await sio.call("site:join", {"occurrence_id": occ, "site_id": site_id},
                                 namespace="/attendance", timeout=120)
            if ack.get("ok"):
                screens.append((sio, site_id))
        except Exception:
            failures += 1

    async def open_viewer(token: str) -> None:
        nonlocal failures
        try:
            sio = await connect(token)
            clients.append(sio)
            await sio.call("viewer:join", {"occurrence_id": occ, "event_id": uuid.uuid4().hex},
                           namespace="/attendance", timeout=120)
            viewers.append(sio)
        except Exception:
            failures += 1

    # Connect at most 50 at a time, as screens coming online after a power cut would.
    gate = asyncio.Semaphore(50)

    async def gated(coro) -> None:
        async with gate:
            await coro

    await asyncio.gather(*(gated(open_screen(t, s)) for t, s in cfg["screens"]))
    await asyncio.gather(*(gated(open_viewer(t)) for t in cfg["viewers"]))

    async def heartbeats() -> None:
        # Spread evenly over the interval, as real pages would be (not all at once).
        gap = cfg["heartbeat"] / max(len(viewers), 1)
        while True:
            for sio in viewers:
                await asyncio.sleep(gap)
                with contextlib.suppress(Exception):
                    await sio.emit("viewer:heartbeat", {"occurrence_id": occ,
                                                        "event_id": uuid.uuid4().hex},
                                   namespace="/attendance")

    beating = asyncio.create_task(heartbeats())
    ready.put((idx, len(clients), failures))
    await loop.run_in_executor(None, go.wait)

    async def burst(kind: str, items: list, rate: float) -> tuple[list[float], int, float]:
        """Send `items` at `rate`/s with acks; returns latencies (s), acked, duration."""
        lat: list[float] = []
        acked = 0
        pending = len(items)
        done = asyncio.Event()

        def make_cb(t0: float):
            def cb(ack=None):
                nonlocal acked, pending
                lat.append((t0 - begin, time.perf_counter() - t0))
                if isinstance(ack, dict) and ack.get("ok"):
                    acked += 1
                pending -= 1
                if pending == 0:
                    done.set()
            return cb

        begin = time.perf_counter()
        for i, item in enumerate(items):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sio, site_id = screens[i % len(screens)]
            cb = make_cb(time.perf_counter())
            try:
                if kind == "ping":
                    await sio.emit("ping", i, namespace="/attendance", callback=cb)
                else:
                    await sio.emit("roll_call:mark", {
                        "occurrence_id": occ, "site_id": site_id, "member_ids": [item],
                        "state": "present", "event_id": uuid.uuid4().hex},
                        namespace="/attendance", callback=cb)
            except Exception:  # a dropped connection: counted as not acknowledged
                pending -= 1
        if pending > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 120)
        return lat, acked, time.perf_counter() - begin

    per_rate = cfg["rate"] / cfg["procs"]
    ping_lat, ping_ok, _ = await burst("ping", list(range(cfg["pings"])), per_rate)
    results.put(("ping", idx, ping_lat, ping_ok, 0.0, cpu_seconds(os.getpid())))
    await loop.run_in_executor(None, cfg["go2"].wait)
    cpu0 = cpu_seconds(os.getpid())
    lat, ok, duration = await burst("checkin", cfg["members"], per_rate)
    results.put(("checkin", idx, lat, ok, duration, cpu_seconds(os.getpid()) - cpu0))
    beating.cancel()
    await asyncio.sleep(1)
    for sio in clients:
        with contextlib.suppress(Exception):
            await sio.disconnect()
    if http is not None:
        await http.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--server", choices=["gevent", "threading"], default="gevent",
                    help="gunicorn with one gevent worker, or the embedded `python app.py`")
    ap.add_argument("--clients", type=int, default=2000, help="concurrent connections (K)")
    ap.add_argument("--checkins", type=int, default=10000, help="check-ins in the burst (M)")
    ap.add_argument("--rate", type=float, default=1000, help="target check-ins per second")
    ap.add_argument("--sites", type=int, default=50, help="site screens among the clients")
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--pings", type=int, default=2000, help="baseline no-op round trips")
    ap.add_argument("--heartbeat", type=float, default=15.0)
    ap.add_argument("--timeline", action="store_true", help="ack latency second by second")
    ap.add_argument("--lean", action="store_true",
                    help="bench/leanio.py clients instead of python-socketio's")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    tmp = Path(tempfile.mkdtemp(prefix="yj-bench-"))
    pg_name = None
    if args.db == "postgres":
        import psycopg

        pg_name = f"yj_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_BASE + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    sites = min(args.sites, args.clients)
    viewers = max(0, args.clients - sites)
    members = max(args.checkins + viewers, 10)
    t0 = time.perf_counter()
    cfg = seed(url, sites=sites, members=members, viewers=viewers)
    log.info("seeded %d sites, %d members, %d viewer users in %.1f s (%s)", sites, members,
             viewers, time.perf_counter() - t0, args.db)

    port = free_port()
    # Media off: this bench measures sockets and the writer, so the viewers' heartbeats are
    # taken without a WHEP connection (YUANJIAO_VIEWER_REQUIRES_MEDIA=0); the registry
    # lookup that the product adds per heartbeat is one dict read under a lock.
    env = dict(os.environ, DATABASE_URL=url, YUANJIAO_PORT=str(port), YUANJIAO_MEDIA="off",
               YUANJIAO_AUTO_MIGRATE="0", YUANJIAO_DEMO="0", YUANJIAO_SECRET_KEY="bench",
               YUANJIAO_LOG_LEVEL="WARNING", YUANJIAO_VIEWER_REQUIRES_MEDIA="0")
    server_log = (tmp / "server.log").open("wb")
    master = subprocess.Popen(server_command(args.server, port, args.clients), cwd=tmp,
                              env=env, stdout=server_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        import requests

        for _ in range(300):
            try:
                requests.get(base + "/login", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        server_pid = worker_pid(master.pid) if args.server == "gevent" else master.pid
        log.info("server: %s, pid %d", args.server, server_pid)
        rss0, threads0 = proc_stats(server_pid)
        ctx = mp.get_context("fork")
        ready, results = ctx.Queue(), ctx.Queue()
        go, go2 = ctx.Event(), ctx.Event()
        screens = list(zip(cfg["screen_tokens"], cfg["site_ids"], strict=True))
        checkin_members = cfg["member_ids"][:args.checkins]
        workers = []
        for i in range(args.procs):
            part = {"occurrence_id": cfg["occurrence_id"], "screens": screens[i::args.procs],
                    "viewers": cfg["viewer_tokens"][i::args.procs],
                    "members": checkin_members[i::args.procs], "rate": args.rate,
                    "procs": args.procs, "pings": args.pings // args.procs,
                    "heartbeat": args.heartbeat, "go2": go2, "lean": args.lean}
            p = ctx.Process(target=client_worker, args=(i, base, part, ready, go, results))
            p.start()
            workers.append(p)
        t_conn = time.perf_counter()
        connected = failed = 0
        for _ in workers:
            _, n, f = ready.get(timeout=900)
            connected += n
            failed += f
        conn_secs = time.perf_counter() - t_conn
        rss1, threads1 = proc_stats(server_pid)
        log.info("connected %d clients (%d failed) in %.1f s; server RSS %.0f MB -> %.0f MB "
                 "(%.0f kB per connection), threads %d -> %d", connected, failed, conn_secs,
                 rss0, rss1, (rss1 - rss0) * 1024 / max(connected, 1), threads0, threads1)
        cpu0, t_cpu0 = cpu_seconds(server_pid), time.perf_counter()
        go.set()
        pings: list[float] = []
        for _ in workers:
            _, _, lat, ok, _, _ = results.get(timeout=600)
            pings += [x for _, x in lat]
        cpu1, t_cpu1 = cpu_seconds(server_pid), time.perf_counter()
        log.info("baseline ping: %d round trips, p50 %.1f ms, p99 %.1f ms; server CPU %.0f %% "
                 "of a core (heartbeats included)", len(pings), pct(pings, 50), pct(pings, 99),
                 100 * (cpu1 - cpu0) / (t_cpu1 - t_cpu0))
        busy0, db0 = machine_busy(), db_cpu_seconds()
        go2.set()
        lat_all: list[float] = []
        timeline: list[tuple[float, float]] = []
        acked, durations, client_cpu = 0, [], 0.0
        peak_rss = rss1
        for _ in workers:
            _, _, lat, ok, duration, cpu = results.get(timeout=900)
            lat_all += [x for _, x in lat]
            timeline += lat
            acked += ok
            durations.append(duration)
            client_cpu += cpu
            peak_rss = max(peak_rss, proc_stats(server_pid)[0])
        cpu2, t_cpu2 = cpu_seconds(server_pid), time.perf_counter()
        busy1, db1 = machine_busy(), db_cpu_seconds()
        for p in workers:
            p.join(60)
        elapsed = max(durations) if durations else 0.0
        stored = count_check_ins(url, cfg["occurrence_id"])
        rss2, threads2 = proc_stats(server_pid)
        log.info("check-ins: %d sent, %d acknowledged, %d rows stored (%s) in %.1f s = "
                 "%.0f/s (target %.0f/s)", len(checkin_members), acked, stored,
                 "EQUAL" if acked == stored else "MISMATCH", elapsed,
                 acked / elapsed if elapsed else 0, args.rate)
        log.info("ack latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms (mean %.1f ms)",
                 pct(lat_all, 50), pct(lat_all, 99), max(lat_all, default=0) * 1000,
                 statistics.fmean(lat_all) * 1000 if lat_all else 0)
        if pings and lat_all:
            log.info("against the no-op baseline of this run: ack p50 %.1f x, p99 %.1f x the "
                     "ping's", pct(lat_all, 50) / pct(pings, 50),
                     pct(lat_all, 99) / pct(pings, 99))
        if args.timeline:
            for second in range(int(elapsed) + 1):
                window = [x for t, x in timeline if second <= t < second + 1]
                log.info("  second %2d: %4d sent, ack p50 %.1f ms, p99 %.1f ms", second,
                         len(window), pct(window, 50), pct(window, 99))
        log.info("server CPU during the burst: %.1f s in %.1f s = %.0f %% of a core "
                 "(%.2f ms per acknowledged check-in, heartbeats included)", cpu2 - cpu1,
                 t_cpu2 - t_cpu1, 100 * (cpu2 - cpu1) / (t_cpu2 - t_cpu1),
                 1000 * (cpu2 - cpu1) / max(acked, 1))
        log.info("load generator CPU during the burst: %.1f s in %d processes (%.0f %% of a "
                 "core)", client_cpu, len(workers), 100 * client_cpu / max(elapsed, 1e-9))
        cores = os.cpu_count() or 1
        log.info("machine during the burst: %.0f %% of its %d cores busy; PostgreSQL "
                 "processes %.0f %% of a core", 100 * (busy1[0] - busy0[0]) /
                 max(busy1[1] - busy0[1], 1e-9), cores,
                 100 * db_cpu_between(db0, db1) / max(t_cpu2 - t_cpu1, 1e-9))
        log.info("server memory: RSS %.0f MB at the end (peak seen %.0f MB), threads %d",
                 rss2, peak_rss, threads2)
    finally:
        master.terminate()
        try:
            master.wait(15)
        except subprocess.TimeoutExpired:
            master.kill()
        if pg_name:
            import psycopg

            with psycopg.connect(PG_BASE + "/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
