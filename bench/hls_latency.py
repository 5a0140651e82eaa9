"""HLS glass-to-glass latency, against the WebRTC path's in the same run.

    .venv/bin/python bench/hls_latency.py --seconds 30

Starts our media node (`python -m video.node`) with the HLS packager on (`hls_dir`), and a
synthetic 640x480, 30 fps publisher over WHIP whose every frame carries the wall clock at
which it was drawn (milliseconds modulo 2^40) as a barcode: four rows of twenty 32x32
blocks at the top of the picture, the 40 bits then their complement, read back after
the picture went through VP8, the node's decode, libx264 and a decoder (a bit is read by
comparing a block with its complement's, so the codecs' shifts in brightness do not
matter; a frame whose pairs do not differ clearly is skipped).

The HLS output is served by a plain static file server on loopback (as nginx would serve
it) and played three ways, at once:

- **model players** (in this process): the playlist fetched every 0.25 s, each new
  segment fetched and decoded with PyAV at once. A player that starts K target durations
  behind the live edge (the end of the newest segment listed when it starts) then shows
  frame m at start + (m - position), waiting (a stall) whenever a segment is not there yet
  in time. K = 3 is hls.js's default (`liveSyncDurationCount`); K = 2 is our watch page's
  setting (static/js/live_hls.js). "At fetch" is the floor any segment player can reach:
  each frame counted when its segment was fetched.
- **Chromium with hls.js** (Debian's chromium, headless, the vendored hls.min.js): two
  pages, one with hls.js's defaults and one with the watch page's settings, each reading
  the barcode of every frame it presents (`requestVideoFrameCallback`, the frame drawn
  into a canvas) against `Date.now()`. `--no-browser` skips them.
- **baseline, WebRTC**: a WHEP subscriber (aiortc) on the same node, reading the barcode
  of every frame it decodes.

Glass-to-glass = the clock when a frame is shown (decoded, for the WebRTC subscriber and
the model's "at fetch") minus the clock drawn into it. Printed: p50 and p95 per player,
and the newest segment's EXT-X-PROGRAM-DATE-TIME against the clock.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path
               if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import http.server  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 640, 480
BLOCK = 32
COLUMNS = WIDTH // BLOCK  # 20
BITS = 40
MODULO = 1 << BITS
#: A block pair whose brightness differs by less than this is unreadable.
MIN_CONTRAST = 48
POLL_SECONDS = 0.25
CHROMIUM = os.environ.get("YUANJIAO_CHROMIUM", "/usr/bin/chromium")


from bench import relay  # noqa: E402

# --- the barcode ----------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000) % MODULO


def barcode_rows(stamp: int) -> bytes:
    """The top 4 x 32 rows of the luma plane: the 40 bits of `stamp` (most significant
    first, two rows of blocks) and then their complement (two more rows)."""
    bits = [(stamp >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    rows = [bits[:COLUMNS], bits[COLUMNS:], [1 - b for b in bits[:COLUMNS]],
            [1 - b for b in bits[COLUMNS:]]]
    out = bytearray()
    for row in rows:
        line = b"".join((b"\xeb" if bit else b"\x10") * BLOCK for bit in row)
        out += line * BLOCK
    return bytes(out)


def read_barcode(luma: bytes, stride: int) -> int | None:
    """The stamp in a picture's luma plane (`stride` bytes a row), or None if unreadable."""

    def level(row: int, column: int) -> int:
        x0, y0 = column * BLOCK + BLOCK // 2 - 4, row * BLOCK + BLOCK // 2 - 4
        return sum(sum(luma[(y0 + dy) * stride + x0:(y0 + dy) * stride + x0 + 8])
                   for dy in range(8)) // 64

    stamp = 0
    for i in range(BITS):
        row, column = divmod(i, COLUMNS)
        bit, complement = level(row, column), level(row + 2, column)
        if abs(bit - complement) < MIN_CONTRAST:
            return None
        stamp = (stamp << 1) | (bit > complement)
    return stamp


def frame_stamp(frame) -> int | None:
    """The stamp of a decoded av.VideoFrame (any size whose width is 640)."""
    if frame.width != WIDTH or frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    plane = frame.planes[0]
    return read_barcode(bytes(plane), plane.line_size)


def age_ms(stamp: int, at_ms: int) -> int:
    """Milliseconds from `stamp` to `at_ms` (both modulo 2^40)."""
    return (at_ms - stamp) % MODULO


# --- the publisher ----------------------------------------------------------------------------


def barcode_track():
    import av
    from aiortc import VideoStreamTrack

    class BarcodeTrack(VideoStreamTrack):
        """640x480 at 30 fps: a moving bar below the barcode of the clock when drawn."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self._below = []
            top = BLOCK * 4 * WIDTH
            for i in range(30):
                y = bytearray(b"\x30" * (WIDTH * HEIGHT - top))
                x0 = (i * WIDTH) // 30
                bar = min(WIDTH // 10, WIDTH - x0)
                for row in range(HEIGHT // 4, 3 * HEIGHT // 4 - BLOCK * 4):
                    y[row * WIDTH + x0:row * WIDTH + x0 + bar] = b"\xe0" * bar
                self._below.append(bytes(y))

        async def recv(self):
            pts, time_base = await self.next_timestamp()
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            frame.planes[0].update(barcode_rows(now_ms()) + self._below[self.count % 30])
            frame.planes[1].update(b"\x80" * frame.planes[1].buffer_size)
            frame.planes[2].update(b"\x80" * frame.planes[2].buffer_size)
            self.count += 1
            frame.pts, frame.time_base = pts, time_base
            return frame

    return BarcodeTrack()


class Peers:
    """The publisher and the WHEP subscriber, on an asyncio loop in a thread."""

    def __init__(self, url: str, hls_dir: str) -> None:
        self.url = url
        self.hls_dir = hls_dir
        self.webrtc: list[tuple[float, int]] = []  # (clock at decode, age ms)
        self.unreadable = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.publisher, self.subscriber = None, None
        self.run(self._publish())

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _post(self, path: str, sdp: str, meta: dict | None = None):
        import requests

        headers = {"Content-Type": "application/sdp", "X-Yuanjiao-Node-Secret": relay.SECRET}
        if meta is not None:
            headers["X-Yuanjiao-Meta"] = json.dumps(meta)
        response = await asyncio.get_running_loop().run_in_executor(None, lambda: (
            requests.post(f"{self.url}{path}", data=sdp, timeout=60, headers=headers)))
        response.raise_for_status()
        return response.text, response.headers["Location"]

    async def _publish(self) -> None:
        from tests.video.peers import Publisher

        self.publisher = Publisher(audio=True)
        track = barcode_track()
        sender = next(t.sender for t in self.publisher.pc.getTransceivers()
                      if t.kind == "video")
        sender.replaceTrack(track)
        self.publisher.video = track
        meta = {"bitrate_kbps": 1200, "height": 480, "hls_dir": self.hls_dir}
        await self.publisher.start(lambda sdp: self._post(f"/whip/{relay.OCCURRENCE}", sdp,
                                                          meta))

    def subscribe(self) -> None:
        self.run(self._subscribe())

    async def _subscribe(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import MediaStreamError

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        self.subscriber = pc

        async def consume(track) -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    if track.kind != "video":
                        continue
                    shown = time.time()
                    stamp = frame_stamp(frame)
                    if stamp is None:
                        self.unreadable += 1
                        continue
                    self.webrtc.append((shown, age_ms(stamp, int(shown * 1000) % MODULO)))

        pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
        await pc.setLocalDescription(await pc.createOffer())
        answer, _ = await self._post(f"/whep/{relay.OCCURRENCE}", pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def close(self) -> None:
        async def close_all():
            for pc in (self.subscriber, self.publisher and self.publisher.pc):
                if pc is not None:
                    await pc.close()
        with contextlib.suppress(Exception):
            self.run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# --- the static file server and the model players ------------------------------------------


class Quiet(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def parse_playlist(text: str) -> dict:
    target = float(re.search(r"#EXT-X-TARGETDURATION:([\d.]+)", text).group(1))
    sequence = int((re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text) or [0, 0])[1])
    segments, duration, date = [], None, None
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            date = datetime.datetime.fromisoformat(line.split(":", 1)[1].replace(
                "+0000", "+00:00")).timestamp()
        elif line and not line.startswith("#"):
            segments.append({"seq": sequence + len(segments), "uri": line,
                             "duration": duration, "date": date})
            date = None
    return {"target": target, "segments": segments, "ended": "#EXT-X-ENDLIST" in text}


class Fetcher(threading.Thread):
    """Polls the playlist every POLL_SECONDS, fetches and decodes each new segment."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        import requests

        self.base = base
        self.http = requests.Session()
        self.polls: list[tuple[float, dict]] = []  # (clock, playlist)
        self.segments: dict[int, dict] = {}  # seq -> {fetched, frames: [(media s, stamp)]}
        self.date_lag: list[float] = []  # clock - the newest segment's date (its start)
        self.unreadable = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        import av

        while not self.stopped.wait(POLL_SECONDS):
            try:
                response = self.http.get(f"{self.base}/index.m3u8", timeout=5)
            except Exception:
                continue
            if not response.ok:
                continue
            clock = time.time()
            playlist = parse_playlist(response.text)
            self.polls.append((clock, playlist))
            if playlist["segments"]:
                newest = playlist["segments"][-1]
                if newest["date"] is not None:
                    self.date_lag.append(clock - newest["date"])
            for segment in playlist["segments"]:
                if segment["seq"] in self.segments:
                    continue
                data = self.http.get(f"{self.base}/{segment['uri']}", timeout=5).content
                fetched = time.time()
                frames = []
                with av.open(io.BytesIO(data), format="mpegts") as container:
                    for frame in container.decode(video=0):
                        stamp = frame_stamp(frame)
                        if stamp is None:
                            self.unreadable += 1
                            continue
                        frames.append((float(frame.pts * frame.time_base), stamp))
                self.segments[segment["seq"]] = {"fetched": fetched, "frames": frames,
                                                 "duration": segment["duration"]}


def model_player(fetcher: Fetcher, start_at: float, k: float) -> list[tuple[float, int]]:
    """A player that starts at the first poll after `start_at`, K target durations behind
    the live edge: [(clock shown, age ms)] for every frame it shows."""
    start = next(((clock, pl) for clock, pl in fetcher.polls
                  if clock >= start_at and pl["segments"]), None)
    if start is None:
        return []
    clock0, playlist = start
    listed = [s for s in playlist["segments"] if s["seq"] in fetcher.segments
              and fetcher.segments[s["seq"]]["frames"]]
    if not listed:
        return []
    last = fetcher.segments[listed[-1]["seq"]]
    edge = last["frames"][0][0] + (listed[-1]["duration"] or playlist["target"])
    position = max(fetcher.segments[listed[0]["seq"]]["frames"][0][0],
                   edge - k * playlist["target"])
    shown, offset = [], None
    for seq in sorted(s for s in fetcher.segments if s >= listed[0]["seq"]):
        segment = fetcher.segments[seq]
        for media, stamp in segment["frames"]:
            if media < position:
                continue
            if offset is None:  # playback starts once the first segment is there
                offset = max(clock0, segment["fetched"]) - media
            due = offset + media
            if segment["fetched"] > due:  # a stall: wait for the segment
                offset += segment["fetched"] - due
                due = segment["fetched"]
            shown.append((due, age_ms(stamp, int(due * 1000) % MODULO)))
    return shown


def at_fetch(fetcher: Fetcher, since: float) -> list[tuple[float, int]]:
    return [(s["fetched"], age_ms(stamp, int(s["fetched"] * 1000) % MODULO))
            for s in fetcher.segments.values() if s["fetched"] >= since
            for _, stamp in s["frames"]]


# --- Chromium with hls.js -----------------------------------------------------------------------

PAGE = """<!doctype html><meta charset="utf-8"><title>hls latency</title>
<video id="v" muted autoplay playsinline></video>
<canvas id="c" width="640" height="128"></canvas>
<script src="hls.min.js"></script>
<script>
const config = JSON.parse(new URLSearchParams(location.search).get("config") || "{}");
const video = document.getElementById("v");
const ctx = document.getElementById("c").getContext("2d", {willReadFrequently: true});
const hls = new Hls(config);
hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
hls.loadSource("hls/index.m3u8");
hls.attachMedia(video);
window.samples = [];
window.unreadable = 0;
function level(d, row, column) {
  const x0 = column * 32 + 12, y0 = row * 32 + 12;
  let sum = 0;
  for (let dy = 0; dy < 8; dy++)
    for (let dx = 0; dx < 8; dx++) {
      const i = ((y0 + dy) * 640 + x0 + dx) * 4;
      sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    }
  return sum / 64;
}
function onFrame() {
  const shown = Date.now();
  ctx.drawImage(video, 0, 0, 640, 128, 0, 0, 640, 128);
  const d = ctx.getImageData(0, 0, 640, 128).data;
  let stamp = 0, ok = true;
  for (let i = 0; i < 40; i++) {
    const row = Math.floor(i / 20), column = i % 20;
    const bit = level(d, row, column), complement = level(d, row + 2, column);
    if (Math.abs(bit - complement) < 48) { ok = false; break; }
    stamp = stamp * 2 + (bit > complement ? 1 : 0);
  }
  if (ok) window.samples.push([shown, stamp, video.currentTime]);
  else window.unreadable++;
  video.requestVideoFrameCallback(onFrame);
}
video.requestVideoFrameCallback(onFrame);
</script>
"""

#: hls.js's defaults, and the watch page's settings (static/js/live_hls.js).
BROWSER_CONFIGS = {
    "hls.js defaults (3 segments behind)": {},
    "watch page (liveSyncDurationCount 2)": {"liveSyncDurationCount": 2,
                                             "liveMaxLatencyDurationCount": 5},
}


def browser_ages(samples: list, since: float) -> list[tuple[float, int]]:
    return [(shown / 1000, age_ms(stamp, shown % MODULO)) for shown, stamp, _ in samples
            if shown / 1000 >= since]


# --- the driver ---------------------------------------------------------------------------------


def summary(name: str, rows: list[tuple[float, int]]) -> str:
    if not rows:
        return f"  {name:44s} no frames"
    ages = sorted(age for _, age in rows)
    p95 = ages[min(len(ages) - 1, int(len(ages) * 0.95))]
    return (f"  {name:44s} p50 {statistics.median(ages) / 1000:5.2f} s   "
            f"p95 {p95 / 1000:5.2f} s   max {ages[-1] / 1000:5.2f} s   ({len(ages)} frames)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=8.0,
                        help="seconds of live stream before the players start")
    parser.add_argument("--no-browser", action="store_true", help="model players only")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    print(f"HLS glass-to-glass: 640x480 30 fps barcode publisher (VP8 over WHIP), the node "
          f"packaging HLS ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})",
          flush=True)
    browser_wanted = not args.no_browser and Path(CHROMIUM).exists()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hls_dir = root / "hls"
        shutil.copy(ROOT / "static" / "vendor" / "hls.min.js", root / "hls.min.js")
        (root / "index.html").write_text(PAGE)
        server, base = serve(root)
        node = relay.Node("encoded")
        peers, fetcher, playwright, browser = None, None, None, None
        pages = {}
        try:
            peers = Peers(node.url, str(hls_dir))
            deadline = time.monotonic() + 30
            while not (hls_dir / "index.m3u8").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            fetcher = Fetcher(f"{base}/hls")
            fetcher.start()
            peers.subscribe()
            time.sleep(args.warmup)
            players_start = time.time()
            if browser_wanted:
                from playwright.sync_api import sync_playwright

                from tests.conftest import CHROMIUM_ARGS

                playwright = sync_playwright().start()
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     headless=True, args=CHROMIUM_ARGS)
                for name, config in BROWSER_CONFIGS.items():
                    page = browser.new_page()
                    page.goto(f"{base}/index.html?config={urllib.parse.quote(json.dumps(config))}")
                    pages[name] = page
            # The players settle (hls.js loads, buffers and starts) before the window.
            time.sleep(5)
            since = time.time()
            end = since + args.seconds
            while time.time() < end:
                for page in pages.values():  # Playwright's sync API needs its turns
                    page.wait_for_timeout(200)
                if not pages:
                    time.sleep(0.2)
            samples = {name: page.evaluate("[window.samples, window.unreadable]")
                       for name, page in pages.items()}
            stats = node.stats()
        finally:
            if browser is not None:
                browser.close()
            if playwright is not None:
                playwright.stop()
            if fetcher is not None:
                fetcher.stopped.set()
            if peers is not None:
                peers.close()
            node.stop()
            server.shutdown()
    print(f"node: mode {stats.get('mode')}, {stats.get('fps')} fps; players started "
          f"{args.warmup:.0f} s after the stream, measured over {args.seconds:.0f} s after "
          f"5 s more", flush=True)
    print("glass-to-glass (clock shown - clock drawn into the frame):")

    def window(rows):
        return [(t, a) for t, a in rows if since <= t <= end]
    print(summary("baseline: WebRTC (WHEP, aiortc, at decode)", window(peers.webrtc)))
    print(summary("HLS model: at fetch (segment floor)", window(at_fetch(fetcher, since))))
    for k, label in ((2, "HLS model: 2 segments behind (watch page)"),
                     (3, "HLS model: 3 segments behind (hls.js)")):
        print(summary(label, window(model_player(fetcher, players_start, k))))
    for name, (rows, unreadable) in samples.items():
        print(summary(f"Chromium + hls.js: {name}", window(browser_ages(rows, since)))
              + (f", {unreadable} unreadable" if unreadable else ""))
    if browser_wanted is False and not args.no_browser:
        print(f"  (no Chromium at {CHROMIUM}: the browser was not measured)")
    lags = list(fetcher.date_lag)
    if lags:
        print(f"newest segment's EXT-X-PROGRAM-DATE-TIME behind the clock: median "
              f"{statistics.median(lags):.2f} s, max {max(lags):.2f} s (contract: within 6 s)")
    last = fetcher.polls[-1][1] if fetcher.polls else None
    if last:
        print(f"playlist: EXT-X-TARGETDURATION {last['target']:g}, segments "
              f"{[s['duration'] for s in last['segments']]}")
    if fetcher.unreadable or peers.unreadable:
        print(f"unreadable frames: HLS {fetcher.unreadable}, WebRTC {peers.unreadable}")
    print(f"total {time.monotonic() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
