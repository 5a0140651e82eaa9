"""The multi-process stack on one host: `make stack` / `make stack-down`.

    .venv/bin/python deploy/stack.py up      # returns once /api/openapi.json answers on :8080
    .venv/bin/python deploy/stack.py down    # stops everything it started
    .venv/bin/python deploy/stack.py status

What `up` starts (pids, logs and the rendered nginx configuration under instance/stack/):

- the database `yuanjiao_stack` on the machine's PostgreSQL (created if missing);
- the machine's Redis is used as it is (started like .ci/run does when it is not running);
- one media origin, `python -m video.node`, on YUANJIAO_STACK_NODE_PORT (8190);
- YUANJIAO_STACK_JANUS (2) Janus edges (Debian's janus, deploy/janus/*.jcfg.in): HTTP API
  on 127.0.0.1:8188, 8189..., only the Streaming plugin, an API secret and an admin key
  kept under instance/stack/;
- YUANJIAO_STACK_WEB (2) gunicorn gevent web processes, each `gunicorn --config
  gunicorn.conf.py` on its own port from YUANJIAO_STACK_WEB_PORT (8101), sharing rooms and
  site presence through Redis; the first one migrates and seeds (under the start-up
  lock) before the others start;
- coturn (Debian's `turnserver`, when installed) on YUANJIAO_STACK_TURN_PORT (3478) with
  `use-auth-secret` (deploy/turnserver.conf.in); the web processes hand out time-limited
  credentials for it (YUANJIAO_TURN_URLS, YUANJIAO_TURN_SECRET);
- nginx on YUANJIAO_STACK_LISTEN (127.0.0.1:8080) in front of them (deploy/nginx.conf.in):
  websocket upgrade; Socket.IO long-polling is pinned to one process per client address
  (ip_hash), websockets and plain requests are spread; HLS segments are sent by nginx
  after the app has checked who asks (X-Accel-Redirect).

The admin comes from YUANJIAO_ADMIN_USERNAME / YUANJIAO_ADMIN_PASSWORD, YUANJIAO_DEMO=0
skips the demo data, as for `python app.py`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INSTANCE = ROOT / "instance"
STATE = INSTANCE / "stack"
PY = sys.executable

LISTEN = os.environ.get("YUANJIAO_STACK_LISTEN", "127.0.0.1:8080")
WEB_COUNT = int(os.environ.get("YUANJIAO_STACK_WEB", "2"))
WEB_PORT = int(os.environ.get("YUANJIAO_STACK_WEB_PORT", "8101"))
NODE_PORT = int(os.environ.get("YUANJIAO_STACK_NODE_PORT", "8190"))
PG_SERVER = os.environ.get("YUANJIAO_STACK_PG", "postgresql://postgres@127.0.0.1:5432")
PG_DB = os.environ.get("YUANJIAO_STACK_DB", "yuanjiao_stack")
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
JANUS = shutil.which("janus") or "/usr/bin/janus"
JANUS_COUNT = int(os.environ.get("YUANJIAO_STACK_JANUS", "2"))
JANUS_HTTP_PORT = int(os.environ.get("YUANJIAO_STACK_JANUS_PORT", "8188"))
JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
TURN_PORT = int(os.environ.get("YUANJIAO_STACK_TURN_PORT", "3478"))


def log(message: str) -> None:
    print(f"stack: {message}", flush=True)


def _secret(name: str) -> str:
    """A secret kept under instance/stack, the same for every process and restart."""
    path = STATE / name
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _pid(name: str) -> int | None:
    path = STATE / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _spawn(name: str, command: list[str], env: dict[str, str]) -> int:
    if (pid := _pid(name)) is not None:
        log(f"{name} already running (pid {pid})")
        return pid
    with (STATE / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(command, cwd=str(ROOT), env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    log(f"{name} started (pid {proc.pid})")
    return proc.pid


def _wait_http(url: str, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if name and _pid(name) is None and (STATE / f"{name}.pid").exists():
            tail = (STATE / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"stack: {name} exited; its log ends:\n{tail}")
        time.sleep(0.3)
    raise SystemExit(f"stack: {url} did not answer within {timeout:.0f} s "
                     f"(see {STATE}/{name}.log)")


def _database() -> str:
    """Create the stack's database if missing; its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (PG_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_DB}"')
            log(f"database {PG_DB} created")
    return PG_SERVER.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{PG_DB}"


def _redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        return
    except redis.RedisError:
        pass
    log("Redis does not answer; starting the machine's redis-server")
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
                    "--port", "6379", "--save", "", "--appendonly", "no"], check=True)
    for _ in range(50):
        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
            return
        except redis.RedisError:
            time.sleep(0.1)
    raise SystemExit(f"stack: Redis not reachable at {REDIS_URL}")


def _nginx_conf() -> Path:
    host, _, port = LISTEN.rpartition(":")
    upstream = "\n".join(f"    server 127.0.0.1:{WEB_PORT + i};" for i in range(WEB_COUNT))
    prefix = STATE / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    text = (DEPLOY / "nginx.conf.in").read_text()
    for key, value in {"LISTEN": f"{host or '127.0.0.1'}:{port}", "UPSTREAM": upstream,
                       "STATE": str(STATE), "ROOT": str(ROOT),
                       "HLS_DIR": str(INSTANCE / "hls"),
                       "MIME_TYPES": "/etc/nginx/mime.types"}.items():
        text = text.replace("@" + key + "@", value)
    conf = STATE / "nginx.conf"
    conf.write_text(text)
    return conf


def render_janus(folder: Path, index: int, name: str, api_secret: str, admin_key: str,
                 http_port: int, port_base: int = 20000) -> list[str]:
    """Write one edge's configuration into `folder`; the command that starts it."""
    libs = JANUS_LIBS if JANUS_LIBS.exists() else next(Path("/usr/lib").glob("*/janus"))
    for sub, lib in (("plugins", "plugins/libjanus_streaming.so"),
                     ("transports", "transports/libjanus_http.so"), ("none", None)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        if lib and not (folder / lib).exists():
            (folder / lib).symlink_to(libs / lib)
    ice, mounts = port_base + index * 1000, port_base + 10000 + index * 1000
    values = {"DIR": str(folder), "NAME": name, "API_SECRET": api_secret,
              "ADMIN_KEY": admin_key, "HTTP_PORT": str(http_port),
              "RTP_RANGE": f"{ice}-{ice + 999}", "MOUNT_RANGE": f"{mounts}-{mounts + 999}"}
    for template in sorted((DEPLOY / "janus").glob("*.jcfg.in")):
        text = template.read_text()
        for key, value in values.items():
            text = text.replace("@" + key + "@", value)
        (folder / template.name.removesuffix(".in")).write_text(text)
    return [JANUS, "-C", str(folder / "janus.jcfg"), "-F", str(folder)]


def render_turn(folder: Path, secret: str, port: int, *, listen_ip: str = "127.0.0.1",
                relay_ip: str = "127.0.0.1", ports: tuple[int, int] = (49160, 49400),
                loopback_peers: bool = True) -> list[str]:
    """Write coturn's configuration into `folder`; the command that starts it.
    `loopback_peers`: relay to 127.x (one host: the media origin is on loopback)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {"LISTEN_IP": listen_ip, "PORT": str(port), "RELAY_IP": relay_ip,
              "MIN_PORT": str(ports[0]), "MAX_PORT": str(ports[1]), "REALM": "yuanjiao",
              "SECRET": secret, "STATE": str(folder),
              "PEERS": "allow-loopback-peers" if loopback_peers else ""}
    text = (DEPLOY / "turnserver.conf.in").read_text()
    for key, value in values.items():
        text = text.replace("@" + key + "@", value)
    conf = folder / "turnserver.conf"
    conf.write_text(text)
    conf.chmod(0o600)
    return [TURNSERVER, "-c", str(conf), "--no-stdout-log"]


def _turn(secret: str) -> list[str]:
    """Start coturn when it is installed; the TURN URLs to hand out (none without it)."""
    if not Path(TURNSERVER).exists():
        log("coturn not installed: no TURN server (apt-get install coturn)")
        return []
    _spawn("turn", render_turn(STATE / "turn", secret, TURN_PORT), dict(os.environ))
    return [f"turn:127.0.0.1:{TURN_PORT}?transport=udp",
            f"turn:127.0.0.1:{TURN_PORT}?transport=tcp"]


def _janus_edges(api_secret: str, admin_key: str) -> list[str]:
    """Render each edge's configuration and start it; their API URLs."""
    urls = []
    for i in range(JANUS_COUNT):
        name = f"janus{i + 1}"
        port = JANUS_HTTP_PORT + i
        command = render_janus(STATE / name, i, name, api_secret, admin_key, port)
        _spawn(name, command, dict(os.environ))
        urls.append(f"http://127.0.0.1:{port}/janus")
    for i, url in enumerate(urls):
        _wait_http(url + "/info", f"janus{i + 1}", timeout=30)
    return urls


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    (INSTANCE / "hls").mkdir(parents=True, exist_ok=True)
    if not Path(NGINX).exists():
        raise SystemExit("stack: nginx is not installed (make stack-deps)")
    db_url = _database()
    _redis()
    node_secret = _secret("node_secret")
    janus_secret, janus_key = _secret("janus_secret"), _secret("janus_admin_key")
    edges = _janus_edges(janus_secret, janus_key) if JANUS_COUNT else []
    turn_secret = _secret("turn_secret")
    turn_urls = _turn(turn_secret)
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": db_url,
        "REDIS_URL": REDIS_URL,
        "YUANJIAO_SECRET_KEY": _secret("secret_key"),
        "YUANJIAO_MEDIA_NODES": f"http://127.0.0.1:{NODE_PORT}",
        "YUANJIAO_MEDIA_NODE_SECRET": node_secret,
        "YUANJIAO_HLS_DIR": str(INSTANCE / "hls"),
        # nginx sends the HLS files once the app has said who may have them.
        "YUANJIAO_HLS_ACCEL": "1",
        "YUANJIAO_JANUS_EDGES": ",".join(edges),
        "YUANJIAO_JANUS_SECRET": janus_secret,
        "YUANJIAO_JANUS_ADMIN_KEY": janus_key,
        "YUANJIAO_TURN_URLS": ",".join(turn_urls),
        "YUANJIAO_TURN_SECRET": turn_secret if turn_urls else "",
    })
    _spawn("node", [PY, "-m", "video.node", "--port", str(NODE_PORT), "--secret",
                    node_secret], env)
    for i in range(WEB_COUNT):
        port = WEB_PORT + i
        _spawn(f"web{i + 1}", [PY, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                               "--chdir", str(ROOT), "--bind", f"127.0.0.1:{port}"],
               {**env, "YUANJIAO_PORT": str(port)})
        if i == 0:
            _wait_http(f"http://127.0.0.1:{port}/api/openapi.json", "web1")
    for i in range(1, WEB_COUNT):
        _wait_http(f"http://127.0.0.1:{WEB_PORT + i}/api/openapi.json", f"web{i + 1}")
    conf = _nginx_conf()
    if _pid("nginx") is None:
        subprocess.run([NGINX, "-t", "-q", "-c", str(conf), "-p", str(STATE / "nginx")],
                       check=True)
        subprocess.run([NGINX, "-c", str(conf), "-p", str(STATE / "nginx")], check=True)
        log("nginx started")
    else:
        subprocess.run([NGINX, "-s", "reload", "-c", str(conf), "-p", str(STATE / "nginx")],
                       check=True)
    _wait_http(f"http://{LISTEN}/api/openapi.json", "nginx")
    log(f"up: http://{LISTEN}/ ({WEB_COUNT} web processes, media node :{NODE_PORT}, "
        f"{len(edges)} Janus edges {' '.join(edges)}, "
        f"TURN {'on :' + str(TURN_PORT) if turn_urls else 'none'}, database {PG_DB}, "
        f"Redis {REDIS_URL})")


def _stop(name: str, timeout: float = 20.0) -> None:
    pid = _pid(name)
    path = STATE / f"{name}.pid"
    if pid is None:
        path.unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(name) is not None:
        time.sleep(0.2)
    if _pid(name) is not None:
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    log(f"{name} stopped")


def down() -> None:
    if not STATE.exists():
        log("nothing to stop")
        return
    _stop("nginx")
    for path in sorted(STATE.glob("web*.pid")):
        _stop(path.stem)
    _stop("node")
    for path in sorted(STATE.glob("janus*.pid")):
        _stop(path.stem)
    _stop("turn")
    log("down")


def status() -> None:
    for path in sorted(STATE.glob("*.pid")):
        pid = _pid(path.stem)
        print(f"{path.stem:8} {'running, pid ' + str(pid) if pid else 'stopped'}")


if __name__ == "__main__":
    commands = {"up": up, "down": down, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: {sys.argv[0]} up|down|status")
    commands[sys.argv[1]]()
