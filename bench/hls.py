"""Benchmark what an HLS viewer costs the web tier of a running stack (`make stack`).

    YUANJIAO_ADMIN_USERNAME=admin YUANJIAO_ADMIN_PASSWORD=... \\
        .venv/bin/python bench/hls.py --requests 3000 --concurrency 16

nginx sends the playlist and the segments (X-Accel-Redirect); each request still reaches
a web process, which checks who asks (bearer token, expected member) and, for a segment,
renews the member's HLS session for attendance (a Redis key). A hls.js viewer asks for
about one playlist and one segment a second (1 s segments). Measured: the web processes'
and nginx's CPU (from /proc) per request, for segments, for playlists, and the baseline
from the same run: `GET /api/health` (the app's cheapest answer through nginx). The
lecture's files are written into the stack's HLS folder (no publisher needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path
               if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "instance" / "stack"
TICKS = os.sysconf("SC_CLK_TCK")


def _smoke():
    spec = importlib.util.spec_from_file_location("deploy_smoke", ROOT / "deploy" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def pids(prefix: str) -> list[int]:
    out = []
    for path in sorted(STATE.glob(f"{prefix}*.pid")):
        pid = int(path.read_text())
        out.append(pid)  # the master, and its workers (gunicorn's, nginx's)
        out += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return out


def run(url: str, headers: dict, n: int, concurrency: int) -> dict:
    local = threading.local()

    def one(_: int) -> float:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        response.raise_for_status()
        return time.perf_counter() - started

    web, nginx = pids("web"), pids("nginx")
    web0, nginx0, t0 = cpu_seconds(web), cpu_seconds(nginx), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(n)))
    elapsed = time.monotonic() - t0
    return {"rate": n / elapsed,
            "web_ms": (cpu_seconds(web) - web0) * 1000 / n,
            "nginx_ms": (cpu_seconds(nginx) - nginx0) * 1000 / n,
            "p50_ms": latencies[n // 2] * 1000,
            "p99_ms": latencies[int(n * 0.99)] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    smoke = _smoke()
    admin = smoke.token_for(os.environ["YUANJIAO_ADMIN_USERNAME"],
                            os.environ["YUANJIAO_ADMIN_PASSWORD"])
    world = smoke.world(admin)
    occ = world["occurrence_id"]
    folder = ROOT / "instance" / "hls" / str(occ)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seg00001.ts").write_bytes(bytes(188) * 800)  # 150 kB, ~1 s at 1.2 Mbit/s
    (folder / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-12-02T00:00:00.000+0000\n#EXTINF:1.0,\nseg00001.ts\n")
    member = {"Authorization": f"Bearer {world['member_token']}"}
    base = smoke.BASE
    rows = [("baseline: GET /api/health", run(f"{base}/api/health", {}, args.requests,
                                              args.concurrency)),
            ("HLS playlist (member)", run(f"{base}/live/{occ}/hls/index.m3u8", member,
                                          args.requests, args.concurrency)),
            ("HLS segment (member, renews attendance)",
             run(f"{base}/live/{occ}/hls/seg00001.ts", member, args.requests,
                 args.concurrency))]
    print(f"{args.requests} requests each, {args.concurrency} at a time, through nginx")
    print(f"{'':42} {'req/s':>7} {'web CPU ms':>11} {'nginx CPU ms':>13} {'p50 ms':>7} "
          f"{'p99 ms':>7}")
    for name, r in rows:
        print(f"{name:42} {r['rate']:7.0f} {r['web_ms']:11.2f} {r['nginx_ms']:13.3f} "
              f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}")
    per_viewer = rows[1][1]["web_ms"] + rows[2][1]["web_ms"]
    print(f"web CPU per HLS viewer (1 playlist + 1 segment a second): {per_viewer:.1f} ms/s "
          f"-> about {1000 / per_viewer:.0f} viewers per web core")


if __name__ == "__main__":
    main()
