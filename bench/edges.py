"""Benchmark Janus edges behind our origin: CPU per site on an edge against our own node,
and the origin's cost per edge.

    .venv/bin/python bench/edges.py --sites 1,16,64 --seconds 10

Starts the origin (`python -m video.node`), a synthetic 640x480 30 fps publisher (VP8 +
Opus) over WHIP, and two Janus edges (Debian's janus, deploy/janus/*.jcfg.in) on
loopback. The origin sends each edge RTP (video.janus.forward). For each N, N sites per
edge watch through Janus's Streaming plugin (Janus offers, the site answers), in worker
processes that count frames by RTP marker bit without decoding (bench/relay.py's patched
receiver). Printed per N: each edge's CPU, the origin's CPU, and the smallest share of
the publisher's frames any site received. The baseline from the same run: our own node
serving N sites itself over WHEP (bench/relay.py's measurement).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path
               if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET, ADMIN_KEY = "bench-janus-secret", "bench-janus-admin"
PER_WORKER = 16


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


relay = _load("bench_relay", ROOT / "bench" / "relay.py")


# --- worker: N sites watching from one edge -----------------------------------------------


async def worker_main(edge_url: str, occurrence_id: int, count: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from video.janus import JanusEdge

    counters: dict = {}
    relay.patch_counting_receiver(counters)
    edge = JanusEdge(edge_url, SECRET, ADMIN_KEY)
    loop = asyncio.get_running_loop()
    pcs, subs, sessions = [], [], []

    async def connect() -> dict:
        requested = time.monotonic()
        watch = await loop.run_in_executor(None, edge.watch, occurrence_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=watch["offer"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        counter = {"kind": "video", "frames": 0, "first": None, "pts": set(),
                   "requested": requested}
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                counters[id(transceiver.receiver)] = counter
                counter["pts"] = {c.payloadType for c in transceiver._codecs}
        await loop.run_in_executor(None, edge.start, watch["session"], watch["handle"],
                                   pc.localDescription.sdp)
        pcs.append(pc)
        sessions.append(watch["session"])
        return counter

    for _ in range(count):
        subs.append(await connect())

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(20)
            for session in sessions:
                await loop.run_in_executor(None, edge.keepalive, session)

    alive = asyncio.ensure_future(keepalive())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(c["first"] is None for c in subs):
        await asyncio.sleep(0.05)
    first = [round((c["first"] - c["requested"]) * 1000) if c["first"] else None
             for c in subs]
    print(json.dumps({"ready": True, "first_frame_ms": first}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "mark":
            print(json.dumps({"frames": [c["frames"] for c in subs]}), flush=True)
        elif command in ("stop", ""):
            break
    alive.cancel()
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
    for session in sessions:
        edge.close(session)


# --- driver -------------------------------------------------------------------------------


class Edge:
    def __init__(self, index: int, folder: Path) -> None:
        stack = _load("deploy_stack", ROOT / "deploy" / "stack.py")
        self.port = relay.free_port()
        self.url = f"http://127.0.0.1:{self.port}/janus"
        command = stack.render_janus(folder / f"edge{index}", index, f"edge{index}", SECRET,
                                     ADMIN_KEY, self.port, port_base=50000)
        with (folder / f"edge{index}.log").open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        import requests

        for _ in range(100):
            try:
                if requests.get(self.url + "/info", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"janus did not start at {self.url}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_workers(edge: Edge, n: int) -> list[subprocess.Popen]:
    workers = []
    for k in range(math.ceil(n / PER_WORKER)):
        count = min(PER_WORKER, n - k * PER_WORKER)
        workers.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", "--url", edge.url, "--count", str(count)],
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    return workers


def measure(node, publisher, edges: list[Edge], n: int, seconds: float) -> dict:
    workers = {e.url: start_workers(e, n) for e in edges}
    every = [w for ws in workers.values() for w in ws]
    try:
        ready = relay.ask(every, None)
        first = [ms for r in ready for ms in r["first_frame_ms"]]
        time.sleep(2)
        before = relay.ask(every, "mark")
        procs = {"origin": node.proc.pid, **{e.url: e.proc.pid for e in edges}}
        cpu0 = {k: relay.cpu_seconds(p) for k, p in procs.items()}
        sent0, t0 = publisher.frames_sent, time.monotonic()
        time.sleep(seconds)
        after = relay.ask(every, "mark")
        cpu1 = {k: relay.cpu_seconds(p) for k, p in procs.items()}
        sent1, t1 = publisher.frames_sent, time.monotonic()
    finally:
        relay.stop_workers(every, 30)
    got = [b - a for ra, rb in zip(before, after, strict=True)
           for a, b in zip(ra["frames"], rb["frames"], strict=True)]
    sent = max(1, sent1 - sent0)
    cpu = {k: (cpu1[k] - cpu0[k]) / (t1 - t0) * 100 for k in procs}
    ok = [ms for ms in first if ms is not None]
    time.sleep(2)
    return {"n": n, "cpu": cpu, "min_share": min(got) / sent * 100 if got else 0.0,
            "first_max": max(ok) if ok else None, "no_frame": len(first) - len(ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="1,16,64", help="sites per edge")
    parser.add_argument("--baseline-sites", default="1,16",
                        help="sites on our own node, for the per-site cost beside the edges")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.url, relay.OCCURRENCE, args.count))
        return
    import logging

    import requests

    from video.janus import JanusEdge

    logging.basicConfig(level=logging.WARNING)
    print(f"edge benchmark: 640x480 30 fps VP8 + Opus, {args.seconds:.0f} s windows, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    node = relay.Node("encoded")
    publisher = None
    edges: list[Edge] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            publisher = relay.PublisherThread(node.url)
            time.sleep(2)
            # Baseline, same run: our node serving the sites itself.
            base = []
            for n in [int(x) for x in args.baseline_sites.split(",")]:
                r = relay.measure(node, publisher, n, args.seconds)
                base.append(r)
                print(f"  our node, N={n:3d} sites on it: origin CPU {r['cpu']:6.1f} % of a core,"
                      f" min frames {r['min_share']:5.1f} %", flush=True)
            alone = base[0]["cpu"] if base else None
            per_site_node = ((base[-1]["cpu"] - base[0]["cpu"]) / (base[-1]["n"] - base[0]["n"])
                             if len(base) > 1 else None)
            edges = [Edge(i, Path(tmp)) for i in range(2)]
            for edge in edges:
                mount = JanusEdge(edge.url, SECRET, ADMIN_KEY).mountpoint(relay.OCCURRENCE)
                requests.post(f"{node.url}/forward/{relay.OCCURRENCE}", timeout=10,
                              headers={"X-Yuanjiao-Node-Secret": relay.SECRET},
                              json={"edge": edge.url, **mount}).raise_for_status()
            time.sleep(2)
            results = []
            for n in [int(x) for x in args.sites.split(",")]:
                r = measure(node, publisher, edges, n, args.seconds)
                results.append(r)
                edge_cpu = [r["cpu"][e.url] for e in edges]
                print(f"  2 edges, N={n:3d} sites each: edge CPU "
                      f"{', '.join(f'{c:.1f}' for c in edge_cpu)} % of a core; origin CPU "
                      f"{r['cpu']['origin']:.1f} %; min frames {r['min_share']:5.1f} %"
                      f"; first frame max {r['first_max']} ms"
                      + (f"; {r['no_frame']} sites got no frame" if r["no_frame"] else ""),
                      flush=True)
            if len(results) > 1:
                lo, hi = results[0], results[-1]
                per_site_edge = sum((hi["cpu"][e.url] - lo["cpu"][e.url])
                                    / (hi["n"] - lo["n"]) for e in edges) / len(edges)
                print(f"per added site: Janus edge {per_site_edge:.2f} % of a core"
                      + (f" vs our node {per_site_node:.2f} % (same run)"
                         if per_site_node is not None else ""))
                print(f"origin CPU with 2 edges: {lo['cpu']['origin']:.1f} % at {lo['n']} "
                      f"site(s) per edge, {hi['cpu']['origin']:.1f} % at {hi['n']} per edge"
                      + (f"; alone with 1 site of its own: {alone:.1f} %"
                         if alone is not None else ""))
        finally:
            if publisher is not None:
                publisher.close()
            for edge in edges:
                edge.stop()
            node.stop()


if __name__ == "__main__":
    main()
