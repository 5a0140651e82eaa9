"""Benchmark Janus edges behind our origin: CPU per site on an edge against our own node,
and the origin's cost as the edges' sites grow.

    .venv/bin/python bench/edges.py --sites 1,16,64 --seconds 15

Starts the origin (`python -m video.node`), a 640x480 30 fps publisher over WHIP (VP8 +
Opus; its busy VP8 encoded once before the run and looped, so that it costs the driver
next to nothing: `--live-publisher` encodes as it goes), and two Janus edges (Debian's
janus, deploy/janus/*.jcfg.in) on loopback. The origin decodes and encodes once (forward
mode off) and sends each edge RTP (video.janus.forward).

For each N, first our own node serves N sites itself over WHEP (the baseline, same run),
then N sites per edge watch through Janus's Streaming plugin (Janus offers, the site
answers). The sites are aiortc peers, up to 64 on one worker process's loop, that count
frames at the UDP level: the RTP header is not encrypted under SRTP, so each datagram is
counted by its marker bit and payload type and dropped before aiortc's decryption and
jitter buffer (ICE and DTLS go on as usual); 128 sites then cost the workers about a
sixth of a core. Printed per N: the edges' CPU, the origin's CPU (and per frame it
encoded, the same work whatever share of the machine it got), the smallest share of the
origin's frames (and of the publisher's) any site received, the workers' CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path
               if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET, ADMIN_KEY = "bench-janus-secret", "bench-janus-admin"
PER_WORKER = 64
#: Sites a worker connects at once (Janus's API and WHEP are asked in parallel).
CONNECT_AT_ONCE = 8


from bench import relay  # noqa: E402

# --- worker: sites watching from one edge, or from our node over WHEP ---------------------


def patch_udp_counting(counters: dict) -> None:
    """Count video frames at the UDP level: the RTP header travels in the clear under SRTP,
    so a datagram whose first byte says RTP (128-191) is counted by its marker bit and
    payload type, then dropped before aiortc's ICE queue, DTLS/SRTP decryption, parsing and
    jitter buffer. STUN (ICE checks, consent) and DTLS (the handshake) go on as before.
    About a tenth of aiortc's per-packet work: 64 sites fit on one process's loop."""
    from aioice.ice import StunProtocol

    original = StunProtocol.datagram_received

    def datagram_received(self, data, addr):  # replaces aioice's method
        if 127 < data[0] < 192:  # RTP or RTCP
            counter = counters.get(id(self.receiver))
            second = data[1]
            if counter is not None and second & 0x80 and (second & 0x7F) in counter["pts"]:
                counter["frames"] += 1
                if counter["first"] is None:
                    counter["first"] = time.monotonic()
            return
        original(self, data, addr)

    StunProtocol.datagram_received = datagram_received


def _ice_connection(pc):
    transceiver = pc.getTransceivers()[0]
    return transceiver.receiver.transport.transport._connection


async def worker_main(url: str, via: str, occurrence_id: int, count: int) -> None:
    import requests
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from video.janus import JanusEdge

    counters: dict = {}
    patch_udp_counting(counters)
    loop = asyncio.get_running_loop()
    pcs, subs, sessions = [], [], []

    def counter_for(pc, requested: float) -> dict:
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        counter = {"frames": 0, "first": None, "requested": requested,
                   "pts": {c.payloadType for c in video._codecs}}
        counters[id(_ice_connection(pc))] = counter
        return counter

    async def connect_janus(edge: JanusEdge) -> dict:
        requested = time.monotonic()
        watch = await loop.run_in_executor(None, edge.watch, occurrence_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=watch["offer"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        counter = counter_for(pc, requested)
        await loop.run_in_executor(None, edge.start, watch["session"], watch["handle"],
                                   pc.localDescription.sdp)
        pcs.append(pc)
        sessions.append((edge, watch["session"]))
        return counter

    async def connect_whep(http: requests.Session) -> dict:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        requested = time.monotonic()
        response = await loop.run_in_executor(None, lambda: http.post(
            f"{url}/whep/{occurrence_id}", data=pc.localDescription.sdp, timeout=60,
            headers={"Content-Type": "application/sdp",
                     "X-Yuanjiao-Node-Secret": relay.SECRET}))
        if response.status_code != 201:
            raise RuntimeError(f"WHEP {response.status_code}: {response.text}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        pcs.append(pc)
        return counter_for(pc, requested)

    # A few at a time, each with its own HTTP session (requests' are not for sharing).
    clients = ([JanusEdge(url, SECRET, ADMIN_KEY) for _ in range(CONNECT_AT_ONCE)]
               if via == "janus" else [requests.Session() for _ in range(CONNECT_AT_ONCE)])
    connect = connect_janus if via == "janus" else connect_whep
    for start in range(0, count, CONNECT_AT_ONCE):
        batch = range(start, min(count, start + CONNECT_AT_ONCE))
        subs += await asyncio.gather(*(connect(clients[i - start]) for i in batch))

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(20)
            for edge, session in sessions:
                await loop.run_in_executor(None, edge.keepalive, session)

    alive = asyncio.ensure_future(keepalive())
    deadline = time.monotonic() + 20
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
    for edge, session in sessions:
        edge.close(session)


# --- driver -------------------------------------------------------------------------------


class Edge:
    def __init__(self, index: int, folder: Path) -> None:
        from deploy import stack
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


def start_workers(url: str, via: str, n: int) -> list[subprocess.Popen]:
    workers = []
    for k in range(math.ceil(n / PER_WORKER)):
        count = min(PER_WORKER, n - k * PER_WORKER)
        workers.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", "--url", url, "--via", via,
             "--count", str(count)],
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    return workers


def origin_frames(node) -> int:
    """The frames the origin's top layer has sent the edges and sites: encoded, or the
    publisher's forwarded (forward mode)."""
    stats = node.stats()
    return stats.get("frames_forwarded", 0) + sum(
        layer.get("frames", 0) for layer in stats.get("layers", [])
        if layer.get("name") == "high")


def measure(node, publisher, targets: list[tuple[str, str]], n: int, seconds: float,
            servers: dict[str, int]) -> dict:
    """N sites on each target (url, "janus" or "whep"); CPU of `servers` (name: pid) and of
    the subscriber workers over `seconds`; each site's frames against the publisher's and
    against the origin's."""
    workers = [w for url, via in targets for w in start_workers(url, via, n)]
    try:
        ready = relay.ask(workers, None)
        first = [ms for r in ready for ms in r["first_frame_ms"]]
        time.sleep(2)
        before = relay.ask(workers, "mark")
        procs = {**servers, **{f"worker{i}": w.pid for i, w in enumerate(workers)}}
        cpu0 = {k: relay.cpu_seconds(p) for k, p in procs.items()}
        sent0, encoded0, t0 = publisher.frames_sent, origin_frames(node), time.monotonic()
        time.sleep(seconds)
        after = relay.ask(workers, "mark")
        cpu1 = {k: relay.cpu_seconds(p) for k, p in procs.items()}
        sent1, encoded1, t1 = publisher.frames_sent, origin_frames(node), time.monotonic()
    finally:
        relay.stop_workers(workers, 30)
    got = [b - a for ra, rb in zip(before, after, strict=True)
           for a, b in zip(ra["frames"], rb["frames"], strict=True)]
    sent, encoded = max(1, sent1 - sent0), max(1, encoded1 - encoded0)
    cpu = {k: (cpu1[k] - cpu0[k]) / (t1 - t0) * 100 for k in procs}
    ok = [ms for ms in first if ms is not None]
    time.sleep(3)  # the departed sites dropped before the next N
    return {"n": n, "cpu": cpu, "sites": len(got),
            "workers_cpu": sum(v for k, v in cpu.items() if k.startswith("worker")),
            "min_share": min(got) / sent * 100 if got else 0.0,
            "min_of_origin": min(got) / encoded * 100 if got else 0.0,
            "mean_of_origin": sum(got) / len(got) / encoded * 100 if got else 0.0,
            "fps_publisher": sent / (t1 - t0), "fps_origin": encoded / (t1 - t0),
            "first_max": max(ok) if ok else None, "no_frame": len(first) - len(ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="1,16,64", help="sites per edge")
    parser.add_argument("--baseline-sites", default=None,
                        help="sites on our own node, served by it (default: --sites)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--live-publisher", action="store_true",
                        help="the publisher encodes its synthetic frames as it goes (by "
                             "default it loops frames encoded once before the run)")
    parser.add_argument("--forward", action="store_true",
                        help="the origin forwards the publisher's VP8 (forward mode) "
                             "instead of decoding and encoding once")
    parser.add_argument("--origin-nice", type=int, default=-10,
                        help="the origin's scheduling priority (root: negative; 0 to leave "
                             "it as it is)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--via", default="janus", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.url, args.via, relay.OCCURRENCE, args.count))
        return
    import logging

    import requests

    from video.janus import JanusEdge

    logging.basicConfig(level=logging.WARNING)
    sites = [int(x) for x in args.sites.split(",")]
    base_sites = [int(x) for x in (args.baseline_sites or args.sites).split(",")]
    started = time.monotonic()
    frames = None if args.live_publisher else relay.preencoded_frames(1200)
    print(f"edge benchmark: 640x480 30 fps VP8 publisher "
          f"({'live' if frames is None else 'pre-encoded, looped'}) + Opus, the origin "
          + ("forwards the publisher's VP8 (forward mode), " if args.forward else
             "decodes and encodes once (480p, 1.2 Mb/s; forward mode off), ")
          + f"{args.seconds:.0f} s windows, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"origin's nice {args.origin_nice}; "
          "subscribers count frames at the UDP level (RTP marker bit, no SRTP decryption, "
          f"no decode), up to {PER_WORKER} sites per worker process", flush=True)
    node = relay.Node("encoded")
    if args.origin_nice:
        # The origin has a machine of its own in production; here it shares two cores
        # with two edges, 128 sites' workers and other people's work. Ahead of them in
        # the scheduler, its CPU is what its work needs (all its frames encoded), not
        # whatever share it was left.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, node.proc.pid, args.origin_nice)
    publisher = None
    edges: list[Edge] = []
    base: dict[int, dict] = {}
    results: dict[int, dict] = {}

    def row(label: str, r: dict, server_cpu: str) -> None:
        print(f"  {label}: {server_cpu}; frames: min {r['min_of_origin']:5.1f} % of the "
              f"origin's ({r['fps_origin']:.1f} fps), min {r['min_share']:5.1f} % of the "
              f"publisher's ({r['fps_publisher']:.1f} fps); subscriber workers "
              f"{r['workers_cpu']:.0f} %; first frame max {r['first_max']} ms"
              + (f"; {r['no_frame']} sites got no frame" if r["no_frame"] else ""),
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            publisher = relay.PublisherThread(node.url, frames=frames,
                                              forward="auto" if args.forward else "off")
            time.sleep(3)
            # Baseline, same run: our node serving the sites itself over WHEP.
            for n in base_sites:
                r = measure(node, publisher, [(node.url, "whep")], n, args.seconds,
                            {"origin": node.proc.pid})
                base[n] = r
                row(f"our node, N={n:3d} sites on it", r,
                    f"origin CPU {r['cpu']['origin']:5.1f} % of a core")
            edges = [Edge(i, Path(tmp)) for i in range(2)]
            for edge in edges:
                mount = JanusEdge(edge.url, SECRET, ADMIN_KEY).mountpoint(relay.OCCURRENCE)
                requests.post(f"{node.url}/forward/{relay.OCCURRENCE}", timeout=10,
                              headers={"X-Yuanjiao-Node-Secret": relay.SECRET},
                              json={"edge": edge.url, **mount}).raise_for_status()
            time.sleep(2)
            servers = {"origin": node.proc.pid, **{e.url: e.proc.pid for e in edges}}
            for n in sites:
                r = measure(node, publisher, [(e.url, "janus") for e in edges], n,
                            args.seconds, servers)
                results[n] = r
                edge_cpu = [r["cpu"][e.url] for e in edges]
                row(f"2 edges, N={n:3d} sites each ", r,
                    f"edge CPU {', '.join(f'{c:4.1f}' for c in edge_cpu)} % of a core, "
                    f"origin CPU {r['cpu']['origin']:5.1f} %")
            mode = node.stats().get("mode")
        finally:
            if publisher is not None:
                publisher.close()
            for edge in edges:
                edge.stop()
            node.stop()
    # CPU per frame the origin encoded: the same work whatever share of the two cores the
    # origin got from the rest of the machine (a starved origin encodes fewer frames).
    print(f"\n{'N per server':>12} | {'origin, N on edges':>24} | {'edge (mean of 2)':>16} | "
          f"{'our node, N itself':>24} | {'min frames, edges':>17} | {'min frames, node':>16}")

    def cell(value, width, unit="%"):
        return f"{value:{width - 2}.1f} {unit}" if value is not None else " " * width

    def origin(r):
        if r is None:
            return " " * 24
        ms = r["cpu"]["origin"] * 10 / max(0.1, r["fps_origin"])
        return f"{r['cpu']['origin']:5.1f} % ({ms:4.1f} ms/frame)".rjust(24)
    for n in sorted(set(results) | set(base)):
        e, b = results.get(n), base.get(n)
        edge_mean = (sum(e["cpu"][x.url] for x in edges) / len(edges)) if e else None
        print(f"{n:12d} | {origin(e)} | {cell(edge_mean, 16)} | {origin(b)} | "
              f"{cell(e and e['min_of_origin'], 17)} | {cell(b and b['min_of_origin'], 16)}")
    if len(results) > 1:
        lo, hi = results[min(results)], results[max(results)]
        span = hi["n"] - lo["n"]
        per_site_edge = sum((hi["cpu"][e.url] - lo["cpu"][e.url]) / span
                            for e in edges) / len(edges)
        line = f"per added site: Janus edge {per_site_edge:.2f} % of a core"
        if lo["n"] in base and hi["n"] in base:
            per_site_node = (base[hi["n"]]["cpu"]["origin"]
                             - base[lo["n"]]["cpu"]["origin"]) / span
            line += f", our node serving them itself {per_site_node:.2f} % (same run)"
        print(line)
        print(f"origin CPU with 2 edges: {lo['cpu']['origin']:.1f} % at {lo['n']} site(s) "
              f"per edge, {hi['cpu']['origin']:.1f} % at {hi['n']} per edge "
              f"({(hi['cpu']['origin'] - lo['cpu']['origin']) / span:+.3f} points per added "
              f"site per edge)")
    print(f"origin's mode at the end: {mode}")
    print(f"total {time.monotonic() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")


if __name__ == "__main__":
    main()
