"""Benchmark the live relay: server CPU per added site, frame delivery, time to first frame.

    .venv/bin/python bench/relay.py --sites 1,8,32,64 --seconds 10

Starts the media engine in a child process (`python -m video.node`), publishes a synthetic
640x480, 30 fps stream (plus silent Opus audio) over WHIP, then for each N connects N
subscribers over WHEP, spread over separate worker processes. The subscribers count
frames WITHOUT decoding: a patched receiver counts RTP packets with the marker bit (the
last packet of a video frame) and drops them before the jitter buffer and decoder. For
each N it prints the server's CPU as a share of one core (from /proc/<pid>/stat over a
fixed window), the minimum over sites of the share of the publisher's frames received,
and the time from a site's WHEP request to its first frame (p50, max). Then the same for
aiortc's MediaRelay with one encoder per site (`--relay mediarelay`), as the baseline.
Both run with forward mode off (`forward: off`), so that the relay decodes and encodes.

    .venv/bin/python bench/relay.py --mode forward --sites 1,8,32,64 --seconds 10

Forward mode against encode-once in the same run: a busy publisher (a quarter of the
picture noise) whose 640x480 VP8 at 1.2 Mb/s (encoded once before the run and looped, a
keyframe every 2 s, so that the driver's publisher costs next to nothing) suits the
lecture's 480p top layer; the node forwards its frames (`forward: auto`, checked in the
node's stats)
and then, on a second node, decodes and encodes once (`forward: off`). Prints both
series, the cost per added site and the fixed cost of each, and the video bitrate each
sent (the per-site cost follows the packets per second).

    .venv/bin/python bench/relay.py --mode forward --send-path --sites 1,8,32,64

The same forward mode, on the sites' fast send path (`video.fastsend`: packetized once
per layer, per-site headers and SRTP, batched GSO sends) and then on aiortc's own sender
loop (`fast_send: false`), in one run: both series, the cost per added site of each and
their ratio, and the fast path's datagrams, GSO batches and sendmsg calls.

    .venv/bin/python bench/relay.py --impair [--impair-seconds 20] [--profiles ...]

Poor links: per profile (clean; 2 % loss 80 ms; 5 % loss 150 ms; 800 kb/s 100 ms;
1.5 Mb/s 1 % loss) one worker process connects two DECODING aiortc subscribers, an
impaired site and a clean control. The impairment sits in the impaired subscriber's own
UDP receive path (`tests.video.peers.Impairment`: random RTP loss, a drop-tail bottleneck
of the given rate with a 100 ms queue like `tbf`, a fixed delay). Prints for both sites
the decoded share of the frames the server sent them, freezes over 500 ms after the first
5 s, the longest one, and the layer (and when the impaired site left the top layer); the
keyframes of the top layer; and the server's CPU per profile, whose excess over the clean
profile (only the top layer encoded) is the ladder's cost, with the per-layer encode time.
`--tbf` (root): the rate limits by the kernel instead, the impaired subscriber in a
network namespace behind `tbf` on a veth pair (private addresses; the node then listens
on the host end of the pair); loss and delay stay in its receive path (no netem here).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/relay.py` puts bench/ first on sys.path, where other benchmarks' module
# names (bench/calendar.py) would shadow the standard library.
sys.path[:] = [p for p in sys.path
               if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret"
OCCURRENCE = 1
SUBSCRIBERS_PER_WORKER = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
VIDEO_ONLY = False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_workers(workers: list, timeout: float) -> None:
    """Tell each subscriber worker to stop, then wait for it (kill a stuck one)."""
    for w in workers:
        try:
            w.stdin.write("stop\n")
            w.stdin.flush()
        except BrokenPipeError:
            pass
    for w in workers:
        try:
            w.wait(timeout)
        except subprocess.TimeoutExpired:
            w.kill()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the subscriber worker (a separate process) ------------------------------------------


def patch_counting_receiver(counters: dict) -> None:
    """Count video frames by RTP marker bit; never jitter-buffer or decode anything."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    def _handle_rtp_packet(self, packet, arrival_time_ms):  # replaces aiortc's method
        counter = counters.get(id(self))
        if counter is None or counter["kind"] != "video" or not packet.marker:
            return
        if packet.payload_type not in counter["pts"]:
            return
        counter["frames"] += 1
        if counter["first"] is None:
            counter["first"] = time.monotonic()

    async def _handle_rtp_packet_async(self, packet, arrival_time_ms):
        _handle_rtp_packet(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = _handle_rtp_packet_async


async def worker_main(url: str, occurrence_id: int, count: int, audio: bool) -> None:
    import requests
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    counters: dict = {}
    patch_counting_receiver(counters)
    loop = asyncio.get_running_loop()
    pcs, subs = [], []

    async def connect() -> dict:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = pc.addTransceiver("video", direction="recvonly")
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        counter = {"kind": "video", "frames": 0, "first": None, "pts": set(),
                   "requested": 0.0}
        counters[id(video.receiver)] = counter
        await pc.setLocalDescription(await pc.createOffer())
        counter["requested"] = time.monotonic()
        response = await loop.run_in_executor(None, lambda: requests.post(
            f"{url}/whep/{occurrence_id}", data=pc.localDescription.sdp, timeout=60,
            headers={"Content-Type": "application/sdp", "X-Yuanjiao-Node-Secret": SECRET}))
        if response.status_code != 201:
            raise RuntimeError(f"WHEP {response.status_code}: {response.text}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        counter["pts"] = {c.payloadType for c in video._codecs}
        pcs.append(pc)
        return counter

    for _ in range(count):
        subs.append(await connect())
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
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


# --- the poor-link worker (a separate process) --------------------------------------------

PROFILES = {
    "clean": {},
    "2% loss 80ms": {"loss": 0.02, "delay_ms": 80},
    "5% loss 150ms": {"loss": 0.05, "delay_ms": 150},
    "800kb/s 100ms": {"rate_kbps": 800, "delay_ms": 100},
    "1.5Mb/s 1% loss": {"rate_kbps": 1500, "loss": 0.01},
}


async def impair_worker_main(url: str, occurrence_id: int, profile: dict,
                             roles: list[str]) -> None:
    """Decoding subscribers, by role: the impaired site and/or the control. Prints `ready`
    with their resource ids, then on `stop` their decoded frames and freezes."""
    import requests
    from aiortc import jitterbuffer

    from tests.video.peers import Impairment, Subscriber

    loop = asyncio.get_running_loop()
    # Watch (never change) the video jitter buffers: how often one was thrown away for a
    # packet 100 or more behind, and how often one gave up on a hole after 512 packets.
    watched: dict = {"resets": 0, "skips": 0, "reset_behind": []}
    original_add, original_smart = (jitterbuffer.JitterBuffer.add,
                                    jitterbuffer.JitterBuffer.smart_remove)

    def add(self, packet):
        if self._is_video and self._origin is not None:
            behind = (self._origin - packet.sequence_number) % 65536
            if jitterbuffer.MAX_MISORDER <= behind < 32768:
                watched["resets"] += 1
                watched["reset_behind"].append(behind)
        return original_add(self, packet)

    def smart_remove(self, count):
        if self._is_video:
            watched["skips"] += 1
        return original_smart(self, count)

    jitterbuffer.JitterBuffer.add = add
    jitterbuffer.JitterBuffer.smart_remove = smart_remove

    def signal_for(label: str):
        async def signal(sdp):
            response = await loop.run_in_executor(None, lambda: requests.post(
                f"{url}/whep/{occurrence_id}", data=sdp, timeout=60, headers={
                    "Content-Type": "application/sdp", "X-Yuanjiao-Node-Secret": SECRET,
                    "X-Yuanjiao-Meta": json.dumps({"label": label})}))
            if response.status_code != 201:
                raise RuntimeError(f"WHEP {response.status_code}: {response.text}")
            return response.text, response.headers["Location"].rsplit("/", 1)[-1]
        return signal

    impairment = Impairment(**profile) if profile and "impaired" in roles else None
    subs = {role: Subscriber(audio=False, impairment=impairment if role == "impaired"
                             else None) for role in roles}
    ids = {role: await sub.start(signal_for(role)) for role, sub in subs.items()}
    for sub in subs.values():
        await sub.wait_frames(1, 15)
    print(json.dumps({"ready": True, "ids": ids}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    stopped = time.monotonic()
    # The server counted the frames it had sent before `stop`: those still crossing the
    # link get its one-way delay (+0.1 s) to arrive and decode. (Not a repair's round trip
    # too: frames sent after the count would then be counted as well.)
    late = 0.1 + profile.get("delay_ms", 0) / 1000
    await asyncio.sleep(late)

    def figures(sub) -> dict:
        first = sub.first_frame_at or stopped
        freezes = sub.freezes(first + 5, stopped, 0.5)
        return {"decoded": sub.frames_between(0, stopped + late), "freezes": len(freezes),
                "longest": max(freezes, default=0.0), "sizes": sorted(sub.sizes)}

    result: dict = {role: figures(sub) for role, sub in subs.items()}
    if impairment is not None:
        result["link"] = {"rtp": impairment.rtp, "lost": impairment.dropped_loss,
                          "queue_drops": impairment.dropped_queue}
    if "impaired" in roles:  # this process's jitter buffers (the control's too, if here)
        result.setdefault("link", {}).update(jitter_resets=watched["resets"],
                                             jitter_skips=watched["skips"],
                                             reset_behind=watched["reset_behind"][:5])
    print(json.dumps(result), flush=True)
    await asyncio.gather(*(sub.close() for sub in subs.values()), return_exceptions=True)


class Netns:
    """A network namespace joined to this one by a veth pair, the host side shaped with
    `tbf` (the rate limit of the impaired site's downlink). Needs root; private addresses;
    nothing leaves the machine; removed on close."""

    def __init__(self, rate_kbps: float | None = None, queue_ms: float = 100.0) -> None:
        self._clean_leftovers()
        tag = os.getpid()
        self.name, self.host_if, self.peer_if = f"yjb{tag}", f"yjh{tag}", f"yjp{tag}"
        # A /30 of its own (two runs at once must not share an address).
        net = 4 * (tag % 16384)
        self.host_ip = f"10.231.{net // 256}.{net % 256 + 1}"
        self.peer_ip = f"10.231.{net // 256}.{net % 256 + 2}"
        self.rate_kbps: float | None = None
        commands = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if],
            ["ip", "link", "set", self.peer_if, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.peer_ip}/30",
             "dev", self.peer_if],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", self.peer_if, "up"],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
        ]
        try:
            for command in commands:
                subprocess.run(command, check=True, capture_output=True)
            self.set_rate(rate_kbps, queue_ms)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _clean_leftovers() -> None:
        """Remove the namespaces of runs that were killed (named after their process)."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        for line in listed.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("yjb") and name[3:].isdigit() \
                    and not Path(f"/proc/{name[3:]}").exists():
                subprocess.run(["ip", "link", "del", f"yjh{name[3:]}"], capture_output=True)
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def set_rate(self, rate_kbps: float | None, queue_ms: float = 100.0) -> None:
        """Shape the namespace's downlink with `tbf` (None: no limit); counters restart."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"],
                       capture_output=True)
        self.rate_kbps = rate_kbps
        if rate_kbps:
            burst = max(2000, int(rate_kbps * 1000 / 8 / 100))  # 10 ms at the rate
            subprocess.run(["tc", "qdisc", "add", "dev", self.host_if, "root", "tbf", "rate",
                            f"{int(rate_kbps)}kbit", "burst", str(burst), "latency",
                            f"{int(queue_ms)}ms"], check=True, capture_output=True)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def drops(self) -> int:
        out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", self.host_if],
                             capture_output=True, text=True).stdout
        for word, following in zip(out.split(), out.split()[1:], strict=False):
            if word.lstrip("(") == "dropped":
                return int(following.rstrip(","))
        return 0

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# --- the driver ---------------------------------------------------------------------------


class Node:
    def __init__(self, relay: str, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.host = host
        self.url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "video.node", "--host", host, "--port", str(self.port),
             "--secret", SECRET,
             "--relay", relay, "--log-level", "WARNING"], cwd=str(ROOT))
        import requests

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1,
                                headers={"X-Yuanjiao-Node-Secret": SECRET}).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("media node did not start")

    def stats(self) -> dict:
        import requests

        return requests.get(f"{self.url}/stats/{OCCURRENCE}", timeout=10,
                            headers={"X-Yuanjiao-Node-Secret": SECRET}).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def preencoded_frames(kbps: int, frames: int = 300, gop: int = 60) -> list:
    """`frames` busy 640x480 pictures encoded once with VP8 at `kbps`, a keyframe every
    `gop` frames (2 s, as OBS is told to): the publisher then costs the driver almost
    nothing, on a machine whose two cores the node and the sites already share."""
    import fractions

    import av

    from tests.video.peers import MovingVideoTrack
    from video.relay import VIDEO_TIME_BASE

    track = MovingVideoTrack(640, 480, busy=True)

    async def grab():
        return [await track.recv() for _ in range(frames)]

    track._start, track._timestamp = time.time() - 3600, 0  # no pacing: all at once
    pictures = asyncio.run(grab())
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 640, 480, "yuv420p"
    ctx.time_base, ctx.framerate = VIDEO_TIME_BASE, fractions.Fraction(30, 1)
    ctx.bit_rate = kbps * 1000
    ctx.gop_size = 100000
    ctx.options = {"bufsize": str(kbps * 1000), "minrate": str(kbps * 1000),
                   "maxrate": str(kbps * 1000), "cpu-used": "-6", "deadline": "realtime",
                   "lag-in-frames": "0", "undershoot-pct": "100", "overshoot-pct": "15",
                   "error-resilient": "1"}
    out = []
    for i, picture in enumerate(pictures):
        picture.pts, picture.time_base = i * 3000, VIDEO_TIME_BASE
        picture.pict_type = (av.video.frame.PictureType.I if i % gop == 0
                             else av.video.frame.PictureType.NONE)
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(picture)]
    return out


def preencoded_track(frames: list):
    """A video track that sends `frames` (encoded) in a loop at 30 fps; aiortc's sender
    only packetizes them (`Encoder.pack`). It cannot make a keyframe on request: its own
    come every 2 s."""
    from aiortc.mediastreams import MediaStreamTrack

    from video.relay import VIDEO_TIME_BASE, EncodedPacket

    class PreEncoded(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self._start: float | None = None

        async def recv(self):
            if self._start is None:
                self._start = time.monotonic()
            due = self._start + self.count / 30
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            data, key = frames[self.count % len(frames)]
            packet = EncodedPacket(data, self.count * 3000, VIDEO_TIME_BASE, key)
            self.count += 1
            return packet

    return PreEncoded()


class PublisherThread:
    """The synthetic trainer, on its own asyncio loop in a thread of the driver."""

    def __init__(self, url: str, busy: bool = False, forward: str = "off",
                 kbps: int | None = None, frames: list | None = None,
                 meta: dict | None = None) -> None:
        self.busy = busy
        self.forward = forward
        self.frames = frames
        self.meta = {"bitrate_kbps": 1200, "height": 480, "forward": forward, **(meta or {})}
        if kbps:
            # The publisher's VP8 at a fixed bitrate (aiortc's follows the REMB it gets,
            # 250 kb/s to 1.5 Mb/s): the forwarded stream then has the lecture's bitrate.
            from aiortc.codecs import vpx

            vpx.DEFAULT_BITRATE = vpx.MIN_BITRATE = vpx.MAX_BITRATE = kbps * 1000
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.publisher = self.run(self._start(url))

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self, url: str):
        import requests

        from tests.video.peers import Publisher

        publisher = Publisher(audio=True, busy=self.busy)
        if self.frames:
            track = preencoded_track(self.frames)
            sender = next(t.sender for t in publisher.pc.getTransceivers()
                          if t.kind == "video")
            sender.replaceTrack(track)
            publisher.video = track

        async def signal(sdp):
            response = await asyncio.get_running_loop().run_in_executor(None, lambda: (
                requests.post(f"{url}/whip/{OCCURRENCE}", data=sdp, timeout=60, headers={
                    "Content-Type": "application/sdp", "X-Yuanjiao-Node-Secret": SECRET,
                    "X-Yuanjiao-Meta": json.dumps(self.meta)})))
            response.raise_for_status()
            return response.text, response.headers["Location"]

        await publisher.start(signal)
        return publisher

    @property
    def frames_sent(self) -> int:
        return self.publisher.video.count

    def close(self) -> None:
        self.run(self.publisher.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def start_workers(url: str, n: int) -> list[subprocess.Popen]:
    extra = ["--video-only"] if VIDEO_ONLY else []
    workers = []
    for k in range(math.ceil(n / SUBSCRIBERS_PER_WORKER)):
        count = min(SUBSCRIBERS_PER_WORKER, n - k * SUBSCRIBERS_PER_WORKER)
        workers.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", "--url", url, "--count", str(count),
             *extra],
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    return workers


def ask(workers: list[subprocess.Popen], command: str | None) -> list[dict]:
    if command:
        for w in workers:
            w.stdin.write(command + "\n")
            w.stdin.flush()
    return [json.loads(w.stdout.readline()) for w in workers]


def pin_sites(node: Node, share: float, layer: str = "low") -> int:
    """Pin every k-th connected site to `layer` (so that its encoder runs too)."""
    import requests

    sites = node.stats().get("sites", [])
    step = max(1, round(1 / share)) if share else 0
    pinned = 0
    for i, site in enumerate(sites):
        if step and i % step == 0:
            requests.post(f"{node.url}/resources/{site['resource_id']}/layer", timeout=10,
                          json={"layer": layer},
                          headers={"X-Yuanjiao-Node-Secret": SECRET}).raise_for_status()
            pinned += 1
    return pinned


def measure(node: Node, publisher: PublisherThread, n: int, seconds: float,
            pin_low: float = 0.0) -> dict:
    workers = start_workers(node.url, n)
    try:
        ready = ask(workers, None)
        first = [ms for r in ready for ms in r["first_frame_ms"]]
        if pin_low:
            pin_sites(node, pin_low)
        time.sleep(2)  # settle
        before = ask(workers, "mark")
        sent0, cpu0, t0 = publisher.frames_sent, cpu_seconds(node.proc.pid), time.monotonic()
        time.sleep(seconds)
        after = ask(workers, "mark")
        sent1, cpu1, t1 = publisher.frames_sent, cpu_seconds(node.proc.pid), time.monotonic()
        stats = node.stats()
    finally:
        stop_workers(workers, 20)
    got = [b - a for ra, rb in zip(before, after, strict=True)
           for a, b in zip(ra["frames"], rb["frames"], strict=True)]
    sent = max(1, sent1 - sent0)
    ok = [ms for ms in first if ms is not None]
    time.sleep(2)  # let the node drop the departed sites before the next N
    return {
        "n": n, "cpu": (cpu1 - cpu0) / (t1 - t0) * 100, "sent": sent,
        "min_share": min(got) / sent * 100 if got else 0.0,
        "first_p50": statistics.median(ok) if ok else None,
        "first_max": max(ok) if ok else None, "no_frame": len(first) - len(ok),
        "server_subscribers": stats.get("subscribers"),
        "server_mode": stats.get("mode"),
        "forward": {k: (stats.get("forward") or {}).get(k)
                    for k in ("state", "reason", "handbacks", "plis", "keyframes",
                              "decoded")},
        "video_kbps": per_site_kbps(stats, seconds),
        "server_fps": stats.get("fps"),
        "send_path": stats.get("send_path"),
        # Packets the server itself dropped for lagging sites (its loop fell behind); the
        # rest of any shortfall was lost on the way to, or inside, the subscriber processes.
        "server_dropped": sum(s.get("packets_dropped", 0) for s in stats.get("sites", [])),
    }


def per_site_kbps(stats: dict, seconds: float) -> float | None:
    """The video bitrate a site got: the forwarded stream's, or the top layer's encoder's."""
    forward = stats.get("forward") or {}
    if stats.get("mode") == "forward":
        return forward.get("bitrate_kbps")
    return stats.get("bitrate_kbps")


def run_mode(relay: str, sites: list[int], seconds: float, forward: str = "off",
             busy: bool = False, label: str | None = None,
             publisher_kbps: int | None = None, frames: list | None = None, *,
             ladder: bool = True, pin_low: float = 0.0,
             fast_send: bool = True) -> list[dict]:
    """`ladder=False`: the lecture has one layer (the single-layer baseline); `pin_low`:
    that share of the sites is pinned to the low layer (its encoder runs too)."""
    node = Node(relay)
    publisher = None
    results = []
    label = label or relay
    try:
        meta = {"fast_send": fast_send, **({} if ladder else {"ladder": False})}
        publisher = PublisherThread(node.url, busy=busy, forward=forward,
                                    kbps=publisher_kbps, frames=frames, meta=meta)
        time.sleep(2)
        for n in sites:
            result = measure(node, publisher, n, seconds, pin_low)
            results.append(result)
            print(f"  {label:10s} N={n:4d}  server CPU {result['cpu']:6.1f} % of a core   "
                  f"min frames {result['min_share']:5.1f} %   first frame p50 "
                  f"{result['first_p50']} ms, max {result['first_max']} ms   "
                  f"(server encodes {result['server_fps']} fps, dropped "
                  f"{result['server_dropped']} packets for lagging sites; mode "
                  f"{result['server_mode']}, video {result['video_kbps']} kb/s)"
                  + (f"   forward {result['forward']}" if forward != "off" else "")
                  + (f"   ({result['no_frame']} sites got no frame)" if result["no_frame"]
                     else ""), flush=True)
            if result["cpu"] > 190:
                print(f"  {label}: the server is saturated; stopping at N={n}", flush=True)
                break
    finally:
        if publisher is not None:
            publisher.close()
        node.stop()
    return results


def summarize(name: str, results: list[dict]) -> dict:
    """Cost per added site against N=1, taken at the largest N where every site still got
    at least 90 % of the frames (beyond that the server does less than the full work, and
    its CPU would flatter it)."""
    base = next((r for r in results if r["n"] == 1), None)
    full = [r for r in results if r["n"] > 1 and r["min_share"] >= 90]
    if base is None or not [r for r in results if r["n"] > 1]:
        return {}
    top = max(full, key=lambda r: r["n"]) if full else max(results, key=lambda r: r["n"])
    note = "" if full else " (no N delivered 90 % of frames: an optimistic figure)"
    if base["min_share"] < 90:
        note += (" (N=1 did not get 90 % of frames: the machine was busy, so the fixed cost"
                 " is overstated and the per-site cost understated; run again)")
    per_site = max(0.001, (top["cpu"] - base["cpu"]) / (top["n"] - 1))
    fixed = base["cpu"] - per_site
    capacity = (200 - fixed) / per_site
    print(f"{name}: cost per added site {per_site:.2f} % of a core (N=1 → N={top['n']}), "
          f"fixed cost {fixed:.1f} %, projected 2-core capacity {capacity:.0f} sites{note}")
    return {"per_site": per_site, "fixed": fixed, "capacity": capacity}


def per_packet_cost(count: int = 50000) -> dict:
    """Process CPU per video packet (µs) of what the ladder adds to every site's sender:
    the history by time (vs aiortc's dict of 128) and the burst pacer's wrapper (vs sending
    directly), on the same packets; and aiortc's own serialization of a packet, for scale."""
    from aiortc.rtp import RtpPacket

    from video.relay import BurstPacer, RetransmitHistory

    packets = []
    for seq in range(count):
        packet = RtpPacket(payload_type=96, sequence_number=seq % 65536, timestamp=seq * 3000)
        packet.ssrc, packet.payload = 1, bytes(1100)
        packets.append(packet)
    wires = [p.serialize() for p in packets[:1000]] * (count // 1000)

    def timed(fn) -> float:
        started = time.process_time()
        fn()
        return (time.process_time() - started) / count * 1e6

    def plain_dict() -> None:
        history: dict = {}
        for p in packets:
            history[p.sequence_number % 128] = p

    def by_time() -> None:
        history = RetransmitHistory(4.5)
        for p in packets:
            history[p.sequence_number % 128] = p

    class Transport:
        async def _send_rtp(self, data: bytes) -> None:
            return None

    async def send_all(transport) -> None:
        for data in wires:
            await transport._send_rtp(data)

    def direct() -> None:
        asyncio.run(send_all(Transport()))

    def paced() -> None:
        transport = Transport()
        BurstPacer(lambda: 1e9, {1}, lambda: None).install(transport)  # never waits
        asyncio.run(send_all(transport))

    def serialize() -> None:
        for p in packets:
            p.serialize()

    out = {}
    for name, fn in (("dict", plain_dict), ("history", by_time), ("direct", direct),
                     ("paced", paced), ("serialize", serialize)):
        out[name] = statistics.median(timed(fn) for _ in range(3))
    return out


def ladder_cost(sites: list[int], seconds: float) -> None:
    """The ladder against the single-layer relay in the same run: per-site cost with the
    ladder (every site on the top layer), without it, and with half the sites pinned to the
    low layer (its encoder runs): the ladder's extra CPU against the lecture's fixed cost."""
    single = run_mode("encoded", sites, seconds, ladder=False, label="one layer")
    laddered = run_mode("encoded", sites, seconds, label="ladder")
    pinned = run_mode("encoded", sites, seconds, pin_low=0.5, label="half low")
    one = summarize("single layer (ladder off)", single)
    two = summarize("ladder, every site on the top layer", laddered)
    summarize("ladder, half the sites on the low layer", pinned)
    extra = [p["cpu"] - s["cpu"] for p, s in zip(pinned, single, strict=False)
             if p["n"] == s["n"] and p["n"] > 1]
    if one and two and extra:
        median = statistics.median(extra)
        print(f"per-site cost: {two['per_site']:.2f} % of a core with the ladder vs "
              f"{one['per_site']:.2f} % without; the low layer's encode adds "
              f"{median:+.1f} points (median over N>1) = {median / one['fixed'] * 100:+.0f} % "
              f"of one lecture's single-layer fixed cost ({one['fixed']:.1f} %)")


def impaired_profile(node: Node, name: str, profile: dict, seconds: float,
                     netns: Netns | None = None) -> dict:
    """One profile: the impaired site (in `netns` when given: its rate limit by `tbf`, its
    loss and delay in its receive path) and the control, in the same lecture."""
    if netns is not None:
        # The rate limit by the kernel: the impaired site in a namespace behind `tbf`;
        # loss and delay stay in its receive path (this kernel has no netem).
        netns.set_rate(profile.get("rate_kbps"), profile.get("queue_ms", 100.0))
        own = {k: v for k, v in profile.items() if k not in ("rate_kbps", "queue_ms")}
        specs = [(netns.prefix(), f"http://{netns.host_ip}:{node.port}", own, "impaired"),
                 ([], node.url, {}, "control")]
    else:
        specs = [([], node.url, profile, "impaired,control")]
    workers = [subprocess.Popen(
        [*prefix, sys.executable, __file__, "--impair-worker", "--url", url,
         "--profile", json.dumps(spec_profile), "--roles", roles],
        cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for prefix, url, spec_profile, roles in specs]
    try:
        ids: dict = {}
        for worker in workers:
            ids.update(json.loads(worker.stdout.readline())["ids"])
        impaired_id, control_id = ids["impaired"], ids["control"]
        stats0, cpu0, t0 = node.stats(), cpu_seconds(node.proc.pid), time.monotonic()
        left_top = None
        layers_seen = []
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            sites = {s["resource_id"]: s for s in node.stats().get("sites", [])}
            layer = sites.get(impaired_id, {}).get("layer")
            if layer and (not layers_seen or layers_seen[-1] != layer):
                layers_seen.append(layer)
            if layer not in (None, "high") and left_top is None:
                left_top = time.monotonic() - t0
        stats1, cpu1, t1 = node.stats(), cpu_seconds(node.proc.pid), time.monotonic()
        for worker in workers:
            worker.stdin.write("stop\n")
            worker.stdin.flush()
        result: dict = {}
        for worker in workers:
            result.update(json.loads(worker.stdout.readline()))
        if netns is not None and netns.rate_kbps:
            result.setdefault("link", {})["tbf_drops"] = netns.drops()
    finally:
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            worker.stdin.close()
            worker.stdout.close()
    sites = {s["resource_id"]: s for s in stats1.get("sites", [])}
    top0 = {entry["name"]: entry for entry in stats0.get("layers", [])}
    top1 = {entry["name"]: entry for entry in stats1.get("layers", [])}
    out = {"name": name, "cpu": (cpu1 - cpu0) / (t1 - t0) * 100, "left_top": left_top,
           "layers_seen": layers_seen, "link": result.get("link"),
           "keyframes_top": top1["high"]["keyframes"] - top0["high"]["keyframes"],
           "keyframes_all": stats1["keyframes"] - stats0["keyframes"],
           "encode_ms": {n: e.get("encode_ms_per_frame") for n, e in top1.items()
                         if e.get("height")},
           "seconds": t1 - t0}
    for role, rid in (("impaired", impaired_id), ("control", control_id)):
        site = sites.get(rid, {})
        sent = max(1, site.get("video_packets_sent", 0))
        figures = result[role]
        out[role] = {**figures, "sent": sent, "share": figures["decoded"] / sent * 100,
                     "layer": site.get("layer"), "loss": site.get("loss"),
                     "rtt_ms": site.get("rtt_ms"),
                     "estimate_kbps": site.get("estimate_kbps"),
                     "retransmits": site.get("retransmits"),
                     "deferred": site.get("retransmits_deferred"),
                     "skipped": site.get("retransmits_skipped"),
                     "repeated": site.get("retransmits_repeated"),
                     "unasked": site.get("retransmits_unasked"),
                     "unasked_late": site.get("retransmits_unasked_late"),
                     "held": site.get("retransmits_held"),
                     "doubled": site.get("retransmits_doubled"),
                     "probes": site.get("nack_probes"),
                     "exhausted": site.get("retransmits_exhausted"),
                     "paced_ms": site.get("paced_ms")}
    time.sleep(2)  # let the node drop the departed sites
    return out


def encode_cost(rounds: int = 3, frames: int = 90) -> dict:
    """CPU per frame (process time, ms) of the top and the low layer's encoders on the same
    busy 640x480 frames, alternated `rounds` times (median): what the ladder adds."""
    from tests.video.peers import MovingVideoTrack
    from video.relay import SharedVideoEncoder

    track = MovingVideoTrack(640, 480, busy=True)

    async def grab():
        out = []
        for _ in range(frames):
            out.append(await track.recv())
        return out

    track._start, track._timestamp = time.time() - 3600, 0  # no pacing: all at once
    pictures = asyncio.run(grab())
    costs: dict[str, list[float]] = {"high": [], "low": []}
    for _ in range(rounds):
        for name, height, kbps in (("high", 480, 1200), ("low", 240, 360)):
            encoder = SharedVideoEncoder("vp8", bitrate_kbps=kbps, height=height, layer=name)
            started = time.process_time()
            for i, picture in enumerate(pictures):
                encoder.encode(picture, i * 3000)
            costs[name].append((time.process_time() - started) * 1000 / frames)
    return {name: statistics.median(values) for name, values in costs.items()}


def run_impair(names: list[str], seconds: float, tbf: bool = False) -> None:
    # With --tbf the node listens on the host end of the veth pair only (the control
    # reaches it there too), the impaired site behind it in the namespace.
    netns = Netns() if tbf else None
    node = Node("encoded", host=netns.host_ip if netns else "127.0.0.1")
    publisher = None
    rows = []
    try:
        publisher = PublisherThread(node.url, busy=True)
        time.sleep(2)
        for name in names:
            row = impaired_profile(node, name, PROFILES[name], seconds, netns)
            rows.append(row)
            imp, ctl = row["impaired"], row["control"]
            left = f"{row['left_top']:.1f} s" if row["left_top"] is not None else "never"
            print(f"  {name:16s} impaired: {imp['share']:5.1f} % of {imp['sent']} frames, "
                  f"{imp['freezes']} freezes > 0.5 s (longest {imp['longest']:.2f} s), "
                  f"layer {imp['layer']} (left the top after {left}; "
                  f"{' → '.join(row['layers_seen'])}), loss {imp['loss']} %, "
                  f"rtt {imp['rtt_ms']} ms, REMB {imp['estimate_kbps']} kb/s, "
                  f"rtx {imp['retransmits']} ({imp['deferred']} waited for the budget, "
                  f"{imp['repeated']} asked again, {imp['unasked']} again unasked "
                  f"({imp['unasked_late']} of them too far behind when due), "
                  f"{imp['held']} held back, {imp['doubled']} sent twice, "
                  f"{imp['probes']} NACK probes, "
                  f"{imp['skipped']} given up: too old or tried 8 times "
                  f"({imp['exhausted']} the latter)), "
                  f"paced {imp['paced_ms']} ms\n"
                  f"  {'':16s} control:  {ctl['share']:5.1f} % of {ctl['sent']} frames, "
                  f"{ctl['freezes']} freezes > 0.5 s, layer {ctl['layer']}, "
                  f"loss {ctl['loss']} %   top-layer keyframes {row['keyframes_top']} in "
                  f"{row['seconds']:.0f} s (all layers {row['keyframes_all']})   "
                  f"server CPU {row['cpu']:.1f} %   encode ms/frame {row['encode_ms']}"
                  + (f"   link {row['link']}" if row["link"] else ""), flush=True)
    finally:
        if publisher is not None:
            publisher.close()
        node.stop()
        if netns is not None:
            netns.close()
    clean = next((r for r in rows if r["name"] == "clean"), None)
    laddered = [r for r in rows if r["impaired"]["layer"] not in (None, "high")
                or r["layers_seen"][1:]]
    if clean and laddered:
        extra = statistics.median(r["cpu"] for r in laddered) - clean["cpu"]
        print(f"server CPU: {clean['cpu']:.1f} % of a core with one layer encoded (clean "
              f"profile, 2 sites) vs median {clean['cpu'] + extra:.1f} % with two "
              f"({extra:+.1f} points; 20 s windows on a shared machine: noisy)")
    cost = encode_cost()
    low_share = cost["low"] * 30 / 10  # % of a core at 30 fps
    line = (f"ladder encode cost (process CPU, same frames, median of 3): high "
            f"{cost['high']:.2f} ms/frame, low {cost['low']:.2f} ms/frame = "
            f"{low_share:.1f} % of a core at 30 fps ({cost['low'] / cost['high'] * 100:.0f} % "
            f"of the top layer's encode)")
    if clean:
        line += (f"; against the lecture's single-layer cost measured above "
                 f"({clean['cpu']:.1f} %): +{low_share / clean['cpu'] * 100:.0f} %")
    print(line)


def run_forward(sites: list[int], seconds: float, send_path: bool = False) -> None:
    """Forward mode and encode-once, one after the other, the same busy publisher; with
    `send_path`, forward mode on the fast send path and on aiortc's sender loop instead."""
    frames = preencoded_frames(1200)
    kbps = sum(len(d) for d, _ in frames) * 8 / (len(frames) / 30) / 1000
    print(f"forward mode vs {'aiortc send path' if send_path else 'encode once'}: busy "
          f"640x480 30 fps VP8 publisher, pre-encoded "
          f"({len(frames)} frames looped, {kbps:.0f} kb/s, a keyframe every 2 s), "
          f"lecture 480p 1.2 Mb/s, "
          f"{seconds:.0f} s windows, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    forwarded = run_mode("encoded", sites, seconds, forward="auto", label="forward",
                         frames=frames)
    if send_path:
        encoded = run_mode("encoded", sites, seconds, forward="auto", label="aiortc-send",
                           frames=frames, fast_send=False)
    else:
        encoded = run_mode("encoded", sites, seconds, forward="off", label="encode",
                           frames=frames)
    modes = {r["server_mode"] for r in forwarded + (encoded if send_path else [])}
    if modes != {"forward"}:
        print(f"  (the node was not forwarding throughout: modes seen {sorted(modes)})")
    ours = summarize("forward mode, fast send path", forwarded)
    base = summarize("forward mode, aiortc's sender (same run)" if send_path
                     else "encode once (same run)", encoded)
    if ours and base and send_path:
        print(f"fast vs aiortc send path: per added site {ours['per_site']:.2f} % vs "
              f"{base['per_site']:.2f} % of a core (ratio "
              f"{base['per_site'] / ours['per_site']:.2f}x), fixed cost {ours['fixed']:.1f} %"
              f" vs {base['fixed']:.1f} %, projected 2-core capacity "
              f"{ours['capacity']:.0f} vs {base['capacity']:.0f} sites; goal: per site "
              f"<= 0.20 %, fixed < 10 %")
        for fast, slow in zip(forwarded, encoded, strict=False):
            path = fast.get("send_path") or {}
            print(f"  N={fast['n']:3d}: CPU {fast['cpu']:.1f} % vs {slow['cpu']:.1f} % "
                  f"(ratio {slow['cpu'] / max(0.1, fast['cpu']):.2f}x); fast path "
                  f"{path.get('datagrams', 0)} datagrams, {path.get('datagrams_batched', 0)} "
                  f"of them in GSO batches, {path.get('send_batches', 0)} sendmsg calls")
    elif ours and base:
        print(f"forward vs encode once: fixed cost {ours['fixed']:.1f} % vs "
              f"{base['fixed']:.1f} % of a core, per added site {ours['per_site']:.2f} % vs "
              f"{base['per_site']:.2f} %, projected 2-core capacity {ours['capacity']:.0f} vs "
              f"{base['capacity']:.0f} sites; video per site "
              f"{statistics.median(r['video_kbps'] or 0 for r in forwarded):.0f} vs "
              f"{statistics.median(r['video_kbps'] or 0 for r in encoded):.0f} kb/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="1,8,32,64")
    parser.add_argument("--baseline-sites", default="1,4,8,16",
                        help="N for aiortc's MediaRelay (it saturates two cores near 16)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--mode", choices=("encoded", "forward"), default="encoded",
                        help="forward: forward mode against encode-once, same run")
    parser.add_argument("--send-path", action="store_true",
                        help="with --mode forward: the fast send path against aiortc's "
                             "sender loop (fast_send: false), same run")
    parser.add_argument("--video-only", action="store_true",
                        help="subscribers ask for video only (cheaper subscriber processes)")
    parser.add_argument("--ladder-cost", action="store_true",
                        help="per-site cost with and without the ladder, and its extra CPU")
    parser.add_argument("--impair", action="store_true",
                        help="poor-link profiles: an impaired and a control decoding site")
    parser.add_argument("--impair-seconds", type=float, default=20.0)
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help="comma-separated profile names for --impair")
    parser.add_argument("--impair-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tbf", action="store_true",
                        help="rate limits by tbf on a veth into a network namespace (root)")
    parser.add_argument("--profile", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--roles", default="impaired,control", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.url, OCCURRENCE, args.count, not args.video_only))
        return
    if args.impair_worker:
        asyncio.run(impair_worker_main(args.url, OCCURRENCE, json.loads(args.profile),
                                       args.roles.split(",")))
        return
    import logging

    global VIDEO_ONLY
    VIDEO_ONLY = args.video_only
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    if args.impair:
        print(f"poor links: 640x480 30 fps VP8 at 1.2 Mb/s (a quarter of the picture "
              f"noise), ladder high 480p / low 240p 360 kb/s / audio, "
              f"{args.impair_seconds:.0f} s per profile, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
        run_impair([n.strip() for n in args.profiles.split(",")], args.impair_seconds,
                   args.tbf)
        print(f"total {time.monotonic() - started:.0f} s; load average at the end "
              f"{os.getloadavg()[0]:.2f}")
        return
    sites = [int(x) for x in args.sites.split(",")]
    if args.mode == "forward":
        run_forward(sites, args.seconds, args.send_path)
        print(f"total {time.monotonic() - started:.0f} s; load average at the end "
              f"{os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")
        return
    print(f"relay benchmark: 640x480 30 fps VP8 + Opus, {args.seconds:.0f} s windows, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.ladder_cost:
        cost = per_packet_cost()
        print(f"per video packet, per site (process CPU, median of 3): history by time "
              f"{cost['history']:.2f} µs vs aiortc's dict {cost['dict']:.2f} µs; pacer "
              f"{cost['paced']:.2f} µs vs a direct send {cost['direct']:.2f} µs; added "
              f"{cost['history'] - cost['dict'] + cost['paced'] - cost['direct']:.2f} µs "
              f"(aiortc's own serialization of the packet: {cost['serialize']:.2f} µs)",
              flush=True)
        encode = encode_cost()
        print(f"encode per frame (process CPU, median of 3): high {encode['high']:.2f} ms, "
              f"low {encode['low']:.2f} ms = {encode['low'] * 3:.1f} % of a core at 30 fps",
              flush=True)
        ladder_cost(sites, args.seconds)
        print(f"total {time.monotonic() - started:.0f} s; load average at the end "
              f"{os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")
        return
    ours = summarize("encode once, fan out packets", run_mode("encoded", sites, args.seconds))
    if not args.no_baseline:
        base_sites = [int(x) for x in args.baseline_sites.split(",")]
        baseline = summarize("aiortc MediaRelay (baseline)",
                             run_mode("mediarelay", base_sites, args.seconds))
        if ours and baseline:
            print(f"capacity ratio to baseline at equal CPU: "
                  f"{ours['capacity'] / baseline['capacity']:.1f}x "
                  f"(per-site cost ratio {baseline['per_site'] / ours['per_site']:.1f}x)")
    print(f"total {time.monotonic() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")


if __name__ == "__main__":
    main()
