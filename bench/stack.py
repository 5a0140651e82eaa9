"""The web tier at 10,000 connections: N gevent processes behind nginx, Redis between them.

    .venv/bin/python bench/stack.py                        # 10,000 clients, 1 then 2 processes
    .venv/bin/python bench/stack.py --clients 2000 --web 2 --checkins 5000

Issue 13's goal: 10,000 concurrent Socket.IO connections across the web processes of this
2-core machine, 1,000 check-ins/s at p99 ≤ 200 ms on PostgreSQL, and the server's CPU per
check-in with two processes within 15 % of one process's. For each process count of
`--web` (default "1,2", in that order, the same run) it starts, on a database of its own
(`yj_stackbench_<random>`, dropped at the end; not the stack's `yuanjiao_stack`):

- N gunicorn gevent web processes (gunicorn.conf.py, one worker each, YUANJIAO_MEDIA=off)
  with REDIS_URL: Socket.IO's message queue on a channel of this run's own
  (YUANJIAO_SOCKETIO_CHANNEL), site presence and attendance rooms shared through Redis;
- nginx (deploy/nginx.conf.in, two workers, `reuseport`) on 127.0.0.1:`--port` (8090; the
  stack's 8080 is left alone) with the websocket upgrade;
- `--procs` asyncio client processes (bench/attendance.py's, speaking Socket.IO through
  bench/leanio.py: python-socketio's client opened ~13 connections a second on this
  machine; `--socketio-clients` for it) that open `--clients` websockets through nginx:
  `--sites` site screens that join their rooms, the rest members watching alone who send a
  heartbeat every `--heartbeat` s (15, as the pages do); then `--idle` seconds of idling
  (heartbeats and Engine.IO pings alone), a baseline of no-op pings, then `--checkins`
  `roll_call:mark` check-ins at `--rate`/s from the screens (distinct members per process
  count). `--py-spy <binary>` records each web process through the burst.

It prints, per process count: connections held (and per process), connect time, the idle
CPU, ping p50/p99, check-ins acknowledged against rows stored, achieved rate, ack p50/p99,
and CPU during the burst of the web processes, nginx, Redis and PostgreSQL, with the web
processes' CPU per acknowledged check-in (heartbeats included, and less the idle cost);
then a table of each process count's CPU per check-in against one process's (the goal:
two within 1.15x). The clients share the two cores with the server:
scaling shows as cost per check-in, not throughput. Raise nothing: the open-file limit
(20,000 here) is per process, which is why nginx runs two workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.attendance import (  # noqa: E402
    PG_BASE,
    client_worker,
    count_check_ins,
    cpu_seconds,
    db_cpu_between,
    db_cpu_seconds,
    free_port,
    machine_busy,
    pct,
    proc_stats,
    seed,
    worker_pid,
)

log = logging.getLogger("bench.stack")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def pids_named(name: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name:
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
    return total


def db_commits(url: str) -> int:
    """Transactions committed in the bench's database so far (PostgreSQL's statistics)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(text("SELECT xact_commit FROM pg_stat_database "
                             "WHERE datname = current_database()"))
    engine.dispose()
    return int(n)


def nginx_conf(folder: Path, listen: str, ports: list[int]) -> Path:
    """deploy/nginx.conf.in for this run: two workers with `reuseport` (each worker may
    hold 20,000 descriptors here, and a proxied websocket takes two)."""
    text = (ROOT / "deploy" / "nginx.conf.in").read_text()
    text = text.replace("worker_processes 1;", "worker_processes 2;\nworker_rlimit_nofile 20000;")
    text = text.replace("worker_connections 16384;", "worker_connections 12000;")
    text = text.replace("listen @LISTEN@;", "listen @LISTEN@ reuseport backlog=4096;")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "nginx" / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    upstream = "\n".join(f"    server 127.0.0.1:{port};" for port in ports)
    for key, value in {"LISTEN": listen, "UPSTREAM": upstream, "STATE": str(folder),
                       "ROOT": str(ROOT), "HLS_DIR": str(folder / "hls"),
                       "MIME_TYPES": "/etc/nginx/mime.types"}.items():
        text = text.replace("@" + key + "@", value)
    conf = folder / "nginx.conf"
    conf.write_text(text)
    return conf


class Tier:
    """N gunicorn gevent processes and nginx in front of them."""

    def __init__(self, folder: Path, n: int, url: str, port: int, clients: int,
                 channel: str, extra_env: dict[str, str]) -> None:
        self.folder = folder
        self.ports = [free_port() for _ in range(n)]
        env = dict(os.environ, DATABASE_URL=url, YUANJIAO_MEDIA="off",
                   YUANJIAO_AUTO_MIGRATE="0", YUANJIAO_DEMO="0", YUANJIAO_SECRET_KEY="bench",
                   YUANJIAO_LOG_LEVEL="WARNING", YUANJIAO_VIEWER_REQUIRES_MEDIA="0",
                   REDIS_URL=REDIS_URL, YUANJIAO_SOCKETIO_CHANNEL=channel, **extra_env)
        self.masters = []
        for i, web_port in enumerate(self.ports):
            out = (folder / f"web{i}.log").open("ab")
            self.masters.append(subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
                 "--chdir", str(ROOT), "--workers", "1", "--worker-connections",
                 str(clients + 2000), "--bind", f"127.0.0.1:{web_port}", "--log-level",
                 "warning"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT))
        import requests

        for web_port in self.ports:
            for _ in range(300):
                try:
                    requests.get(f"http://127.0.0.1:{web_port}/login", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.2)
        self.workers = [worker_pid(m.pid) for m in self.masters]
        self.conf = nginx_conf(folder, f"127.0.0.1:{port}", self.ports)
        prefix = ["-c", str(self.conf), "-p", str(folder / "nginx")]
        subprocess.run([NGINX, "-t", "-q", *prefix], check=True)
        subprocess.run([NGINX, *prefix], check=True)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(self.url + "/login", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        self.nginx_master = int((folder / "nginx.pid").read_text())
        self.nginx = [self.nginx_master, *children(self.nginx_master)]

    def stop(self) -> None:
        subprocess.run([NGINX, "-s", "quit", "-c", str(self.conf), "-p",
                        str(self.folder / "nginx")], capture_output=True)
        for master in self.masters:
            master.terminate()
        for master in self.masters:
            try:
                master.wait(20)
            except subprocess.TimeoutExpired:
                master.kill()
        for pid in self.workers:  # a worker its master left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not Path(f"/proc/{self.nginx_master}").exists():
                break
            time.sleep(0.2)


def profile(args, n: int, pids: list[int], phase: str = "") -> list[subprocess.Popen]:
    """py-spy (`--py-spy`) records each web process through the idle phase and the burst:
    collapsed stacks `<dir>/web<n>-<i>[-idle].txt` (one sampler per process: two doubled
    the profiler's own load on the two cores; `flamegraph.pl` or speedscope draw them)."""
    if not args.py_spy:
        return []
    out = Path(args.profile_dir)
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for i, pid in enumerate(pids):
        spies.append(subprocess.Popen(
            [args.py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
             "--output", str(out / f"web{n}-{i}{phase}.txt"), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)
    return spies


def gc_stalls(folder: Path) -> dict[str, list[float]]:
    """The full and middle garbage collections each web process logged as stalls
    (core.gctune.watch_gc), in ms, in the order logged, by log file."""
    import re

    return {path.name: [float(m.group(1)) for m in re.finditer(
        r"(?:full|middle) garbage collection stalled the process for (\d+) ms",
        path.read_text(errors="replace"))] for path in folder.glob("web*.log")}


def logged(folder: Path, worst: int = 5) -> list[tuple[str, int]]:
    """The web processes' most frequent log lines (warnings and errors: the bench runs
    them at WARNING), numbers left out so that repeats count as one."""
    import re
    from collections import Counter

    lines: Counter[str] = Counter()
    for path in folder.glob("web*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.strip() and not line.startswith((" ", "\t")):
                lines[re.sub(r"\d+", "N", line)[:160]] += 1
    return lines.most_common(worst)


def stalls(sent_at: list[tuple[float, float]], window: float = 0.5, worst: int = 4
           ) -> list[tuple[float, int, float]]:
    """The burst's `worst` half-seconds by ack p99 (when sent, how many, p99 in ms), when
    their p99 is over 200 ms: a stall (a full garbage collection, a slow commit) shows as
    one window, a backlog as a run of them."""
    by: dict[int, list[float]] = {}
    for t, x in sent_at:
        by.setdefault(int(t / window), []).append(x)
    rows = [(k * window, len(v), pct(v, 99)) for k, v in by.items()]
    return sorted((r for r in rows if r[2] > 200), key=lambda r: -r[2])[:worst]


def run_tier(n: int, args, cfg: dict, members: list[int], url: str, channel: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"yj-stackbench-{n}-"))
    extra = {"YUANJIAO_SOCKETIO_PING_INTERVAL": str(args.ping_interval)}
    tier = Tier(folder, n, url, args.port, args.clients, channel, extra)
    log.info("%d web process(es) %s behind nginx %s (workers %s)", n, tier.workers,
             tier.url, tier.nginx[1:])
    workers: list = []
    try:
        ctx = mp.get_context("fork")
        ready, results = ctx.Queue(), ctx.Queue()
        go, go2 = ctx.Event(), ctx.Event()
        screens = list(zip(cfg["screen_tokens"], cfg["site_ids"], strict=True))
        for i in range(args.procs):
            part = {"occurrence_id": cfg["occurrence_id"], "screens": screens[i::args.procs],
                    "viewers": cfg["viewer_tokens"][i::args.procs],
                    "members": members[i::args.procs], "rate": args.rate,
                    "procs": args.procs, "pings": args.pings // args.procs,
                    "heartbeat": args.heartbeat, "go2": go2, "lean": not args.socketio_clients}
            p = ctx.Process(target=client_worker, args=(i, tier.url, part, ready, go, results),
                            daemon=True)  # gone with this process, even interrupted
            p.start()
            workers.append(p)
        t_conn = time.perf_counter()
        connected = failed = 0
        for _ in workers:
            _, got, fails = ready.get(timeout=1800)
            connected += got
            failed += fails
        conn_secs = time.perf_counter() - t_conn
        per_process = [len(os.listdir(f"/proc/{pid}/fd")) for pid in tier.workers]
        rss = [proc_stats(pid)[0] for pid in tier.workers]
        log.info("  connected %d clients (%d failed) in %.0f s; open descriptors per web "
                 "process %s; RSS per web process %s MB", connected, failed, conn_secs,
                 per_process, [round(r) for r in rss])
        # Idle: the connections' heartbeats and Engine.IO pings alone, the cost the burst's
        # figures carry beside the check-ins (subtracted for the marginal cost below).
        idle_spies = profile(args, n, tier.workers, "-idle")
        web_i0, t_i0 = cpu_of(tier.workers), time.perf_counter()
        time.sleep(args.idle)
        idle_cpu = (cpu_of(tier.workers) - web_i0) / (time.perf_counter() - t_i0)
        for spy in idle_spies:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        log.info("  idle for %.0f s: web processes %.0f %% of a core (heartbeats, pings)",
                 args.idle, idle_cpu * 100)
        before_burst = gc_stalls(folder)  # while the connections arrived, and idling
        go.set()
        pings: list[float] = []
        for _ in workers:
            _, _, lat, _ok, _, _ = results.get(timeout=900)
            pings += [x for _, x in lat]
        stored0 = count_check_ins(url, cfg["occurrence_id"])
        commits0 = db_commits(url)
        redis = pids_named("redis-server")
        web0, nginx0, redis0 = cpu_of(tier.workers), cpu_of(tier.nginx), cpu_of(redis)
        busy0, db0, t0 = machine_busy(), db_cpu_seconds(), time.perf_counter()
        spies = profile(args, n, tier.workers)
        go2.set()
        lat_all: list[float] = []
        sent_at: list[tuple[float, float]] = []  # (sent, s after the burst began; latency)
        acked, durations, client_cpu = 0, [], 0.0
        for _ in workers:
            _, _, lat, ok, duration, cpu = results.get(timeout=1800)
            lat_all += [x for _, x in lat]
            sent_at += lat
            acked += ok
            durations.append(duration)
            client_cpu += cpu
        t1 = time.perf_counter()
        web1, nginx1, redis1 = cpu_of(tier.workers), cpu_of(tier.nginx), cpu_of(redis)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        busy1, db1 = machine_busy(), db_cpu_seconds()
        held = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in tier.workers)
        for p in workers:
            p.join(120)
        stored = count_check_ins(url, cfg["occurrence_id"]) - stored0
        time.sleep(1.5)  # each backend reports its transactions within a second
        commits = db_commits(url) - commits0
        elapsed = max(durations) if durations else 0.0
        span = t1 - t0
        out = {
            "n": n, "connected": connected, "failed": failed, "connect_s": conn_secs,
            "per_process": per_process, "held_fds_end": held,
            "ping_p50": pct(pings, 50), "ping_p99": pct(pings, 99),
            "sent": len(members), "acked": acked, "stored": stored,
            "rate": acked / elapsed if elapsed else 0.0,
            "p50": pct(lat_all, 50), "p99": pct(lat_all, 99),
            "web_cpu": (web1 - web0) / span * 100, "nginx_cpu": (nginx1 - nginx0) / span * 100,
            "redis_cpu": (redis1 - redis0) / span * 100,
            "db_cpu": db_cpu_between(db0, db1) / span * 100,
            "client_cpu": client_cpu / max(elapsed, 1e-9) * 100,
            "machine": (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9) * 100,
            "web_ms_per_checkin": (web1 - web0) * 1000 / max(acked, 1),
            "idle_cpu": idle_cpu * 100,
            # The burst's web CPU less what the same span of idling costs (heartbeats).
            "marginal_ms_per_checkin": max(0.0, web1 - web0 - idle_cpu * span) * 1000
            / max(acked, 1),
            "front_ms_per_checkin": (web1 - web0 + nginx1 - nginx0 + redis1 - redis0)
            * 1000 / max(acked, 1),
            "commits": commits,
        }
        log.info("  ping p50 %.1f ms, p99 %.1f ms (no-op baseline, this tier)",
                 out["ping_p50"], out["ping_p99"])
        log.info("  check-ins: %d sent, %d acknowledged, %d rows stored (%s) at %.0f/s "
                 "(target %.0f/s); ack p50 %.1f ms, p99 %.1f ms", out["sent"], acked, stored,
                 "EQUAL" if acked == stored else "MISMATCH", out["rate"], args.rate,
                 out["p50"], out["p99"])
        for line, count in logged(folder):
            log.info("  web processes logged %d× %s", count, line)
        by_file = gc_stalls(folder)
        connecting = [ms for found in before_burst.values() for ms in found]
        in_burst = [ms for name, found in by_file.items()
                    for ms in found[len(before_burst.get(name, [])):]]
        out["gc_stalls"] = {"connecting": connecting, "burst": in_burst}
        if connecting or in_burst:
            log.info("  garbage collection stalls logged by the web processes while the "
                     "connections arrived and idled: %d, longest %.0f ms; in the pings and "
                     "the burst: %d, longest %.0f ms", len(connecting),
                     max(connecting, default=0), len(in_burst), max(in_burst, default=0))
        slow = stalls(sent_at)
        if slow:
            log.info("  slowest half-seconds of the burst (sent at: check-ins, ack p99): %s",
                     ", ".join(f"{t:.1f} s: {n}, {p:.0f} ms" for t, n, p in slow))
        log.info("  CPU during the burst (%% of a core): web processes %.0f, nginx %.0f, "
                 "Redis %.0f, PostgreSQL %.0f, load generator %.0f; machine %.0f %% busy",
                 out["web_cpu"], out["nginx_cpu"], out["redis_cpu"], out["db_cpu"],
                 out["client_cpu"], out["machine"])
        log.info("  web CPU per acknowledged check-in %.2f ms (web + nginx + Redis %.2f ms; "
                 "%d heartbeats/s included)", out["web_ms_per_checkin"],
                 out["front_ms_per_checkin"],
                 (args.clients - len(screens)) / args.heartbeat)
        log.info("  less the idle cost: %.2f ms of web CPU per check-in",
                 out["marginal_ms_per_checkin"])
        log.info("  database commits from the burst's start to 1.5 s after its last ack: %d "
                 "(%.0f per "
                 "second, %.1f check-ins each; heartbeats' and the writers' own included)",
                 commits, commits / max(span, 1e-9), acked / max(commits, 1))
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        return out
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
        tier.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _stop(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--checkins", type=int, default=10000, help="check-ins per process count")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--sites", type=int, default=100, help="site screens among the clients")
    ap.add_argument("--procs", type=int, default=10, help="client processes")
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--heartbeat", type=float, default=15.0)
    ap.add_argument("--web", default="1,2", help="process counts to measure, in order")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds of idling measured before the pings")
    ap.add_argument("--ping-interval", type=int, default=20,
                    help="YUANJIAO_SOCKETIO_PING_INTERVAL of the web processes")
    ap.add_argument("--socketio-clients", action="store_true",
                    help="python-socketio clients instead of bench/leanio.py's")
    ap.add_argument("--py-spy", default="", help="py-spy binary: profile the web processes")
    ap.add_argument("--profile-dir", default="/tmp/yj-stack-profile")
    args = ap.parse_args()
    # Stopped (SIGTERM, SIGHUP) as when interrupted: the `finally`s stop nginx and the web
    # processes and drop the database.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = [int(x) for x in args.web.split(",")]
    import psycopg

    name = f"yj_stackbench_{secrets.token_hex(4)}"
    channel = f"yuanjiao-bench-{secrets.token_hex(4)}"
    with psycopg.connect(PG_BASE + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    started = time.perf_counter()
    log.info("web tier bench: %d clients, %d check-ins at %.0f/s per process count %s, "
             "%d cores, load average %.2f", args.clients, args.checkins, args.rate, counts,
             os.cpu_count(), os.getloadavg()[0])
    try:
        sites = min(args.sites, args.clients)
        viewers = max(0, args.clients - sites)
        t0 = time.perf_counter()
        cfg = seed(url, sites=sites, members=args.checkins * len(counts) + viewers + 10,
                   viewers=viewers)
        log.info("seeded %d sites, %d viewers in %.0f s (PostgreSQL %s)", sites, viewers,
                 time.perf_counter() - t0, name)
        rows = []
        for k, n in enumerate(counts):
            members = cfg["member_ids"][k * args.checkins:(k + 1) * args.checkins]
            rows.append(run_tier(n, args, cfg, members, url, channel))
        one = next((r for r in rows if r["n"] == 1), None)
        for row in rows:
            line = (f"{row['n']} process(es): {row['connected']} connections held "
                    f"({row['per_process']} descriptors per process), {row['rate']:.0f} "
                    f"check-ins/s, p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, "
                    f"{row['acked']}/{row['stored']} acked/stored, web CPU "
                    f"{row['web_ms_per_checkin']:.2f} ms per check-in "
                    f"(+ nginx + Redis: {row['front_ms_per_checkin']:.2f} ms), idle "
                    f"{row['idle_cpu']:.0f} % of a core, less idle "
                    f"{row['marginal_ms_per_checkin']:.2f} ms per check-in")
            log.info(line)
        if one is not None:
            log.info("server CPU per check-in against one process's (goal: two within 1.15x):")
            log.info("  %-10s %10s %10s %14s %12s", "processes", "web ms", "ratio",
                     "web+nginx+Redis", "less idle")
            for row in rows:
                log.info("  %-10d %10.2f %9.2fx %13.2fx %11.2fx", row["n"],
                         row["web_ms_per_checkin"],
                         row["web_ms_per_checkin"] / one["web_ms_per_checkin"],
                         row["front_ms_per_checkin"] / one["front_ms_per_checkin"],
                         row["marginal_ms_per_checkin"]
                         / max(one["marginal_ms_per_checkin"], 1e-9))
    finally:
        with psycopg.connect(PG_BASE + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log.info("total %.0f s; load average at the end %.2f", time.perf_counter() - started,
                 os.getloadavg()[0])


if __name__ == "__main__":
    main()
