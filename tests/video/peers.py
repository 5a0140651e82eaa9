"""aiortc peers for media tests and the benchmark: a synthetic publisher, counting subscribers.

These run on the caller's own asyncio loop (not the engine's), like a remote client would.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

Signal = Callable[[str], Awaitable[tuple[str, str]]]  # offer sdp -> (answer sdp, resource id)


#: Noise of amplitude 32 around mid-grey: a quarter of a 640x480 picture of it keeps VP8
#: at about 1.1 Mb/s (full-range noise would need 4 Mb/s).
NOISE = bytes(112 + b % 32 for b in range(256))


class MovingVideoTrack(VideoStreamTrack):
    """640x480 at 30 fps with a bar that moves, so every frame differs from the last.

    `busy`: the bottom quarter is fresh noise in every frame, so that the encoder needs
    about its whole bitrate (the bar alone needs a fraction of it).
    """

    def __init__(self, width: int = 640, height: int = 480, busy: bool = False) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.busy = busy
        self._frames = []
        for i in range(30):
            frame = av.VideoFrame(width, height, "yuv420p")
            y = bytearray(b"\x30" * (width * height))
            x0 = (i * width) // 30
            bar = min(width // 10, width - x0)
            for row in range(height // 4, 3 * height // 4):
                start = row * width + x0
                y[start:start + bar] = b"\xe0" * bar
            frame.planes[0].update(bytes(y))
            frame.planes[1].update(bytes([(i * 8) % 256]) * frame.planes[1].buffer_size)
            frame.planes[2].update(b"\x80" * frame.planes[2].buffer_size)
            self._frames.append(frame)
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        template = self._frames[self.count % len(self._frames)]
        self.count += 1
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for dst, src in zip(frame.planes, template.planes, strict=True):
            dst.update(bytes(src))
        if self.busy:
            y = bytearray(bytes(frame.planes[0]))
            band = self.width * (self.height // 4)
            y[-band:] = random.randbytes(band).translate(NOISE)
            frame.planes[0].update(bytes(y))
        frame.pts, frame.time_base = pts, time_base
        return frame


def empty_config() -> RTCConfiguration:
    """No STUN at all: tests run on a closed network, over the loopback interface."""
    return RTCConfiguration(iceServers=[])


class Publisher:
    """A plain aiortc WHIP client, as OBS would be: synthetic video and silent audio."""

    def __init__(self, audio: bool = True, width: int = 640, height: int = 480,
                 certificate: Any = None, busy: bool = False) -> None:
        self.pc = RTCPeerConnection(configuration=empty_config())
        if certificate is not None:
            # aiortc has no public way to choose the certificate: set it before any
            # transport is made (transports take it when the first track is added).
            self.pc._RTCPeerConnection__certificates = [certificate]
        self.video = MovingVideoTrack(width, height, busy=busy)
        self.pc.addTrack(self.video)
        if audio:
            self.pc.addTrack(AudioStreamTrack())
        self.resource_id: str | None = None

    async def start(self, signal: Signal) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer, self.resource_id = await signal(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return self.resource_id

    async def close(self) -> None:
        await self.pc.close()


class Impairment:
    """A bad link in front of ONE test peer's UDP receive path (test-side only).

    It wraps the peer's ICE transport's datagram receive: RTP packets (not DTLS, not
    RTCP) are dropped with probability `loss`; every datagram then goes through a
    bottleneck of `rate_kbps` with a drop-tail queue of `queue_ms` (like `tbf`), and
    arrives `delay_ms` later. Counts what it saw and dropped.
    """

    def __init__(self, *, loss: float = 0.0, delay_ms: float = 0.0,
                 rate_kbps: float | None = None, queue_ms: float = 100.0,
                 seed: int = 14) -> None:
        self.loss = loss
        self.delay = delay_ms / 1000
        self.rate = rate_kbps * 1000 / 8 if rate_kbps else None  # bytes per second
        self.queue = queue_ms / 1000
        self.random = random.Random(seed)
        self.rtp = 0
        self.dropped_loss = 0
        self.dropped_queue = 0
        self.bytes_in = 0
        self._link_free_at = 0.0
        self._task: asyncio.Task | None = None

    def install(self, pc: RTCPeerConnection) -> None:
        """Call after setLocalDescription (the transports exist), before connecting."""
        ice = pc.getTransceivers()[0].receiver.transport.transport
        original = ice._recv
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()

        def deliver(item: Any) -> None:
            inbox.put_nowait(item)

        async def pump() -> None:
            while True:
                try:
                    data = await original()
                except BaseException as exc:  # closed: hand the error to the reader
                    inbox.put_nowait(exc)
                    return
                now = loop.time()
                self.bytes_in += len(data)
                is_rtp = 127 < data[0] < 192 and len(data) > 1 and not 192 <= data[1] <= 223
                if is_rtp:
                    self.rtp += 1
                    if self.random.random() < self.loss:
                        self.dropped_loss += 1
                        continue
                at = now
                if self.rate:
                    if self._link_free_at - now > self.queue:
                        self.dropped_queue += 1
                        continue
                    self._link_free_at = max(now, self._link_free_at) + len(data) / self.rate
                    at = self._link_free_at
                at += self.delay
                if at <= now:
                    deliver(data)
                else:
                    loop.call_at(at, deliver, data)

        async def recv() -> bytes:
            if self._task is None:  # the DTLS transport reads only once ICE is connected
                self._task = asyncio.ensure_future(pump())
            item = await inbox.get()
            if isinstance(item, BaseException):
                inbox.put_nowait(item)
                raise item
            return item

        ice._recv = recv


class Subscriber:
    """A WHEP client that decodes and counts the frames it gets."""

    def __init__(self, audio: bool = True, impairment: Impairment | None = None) -> None:
        self.impairment = impairment
        self.frame_times: list[float] = []
        self.pc = RTCPeerConnection(configuration=empty_config())
        self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.frames = 0
        self.audio_frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self.requested_at = 0.0
        self.first_frame_at: float | None = None
        self.ended = asyncio.Event()
        self.video_track: Any = None
        self._tasks: list[asyncio.Task] = []
        self.resource_id: str | None = None

        @self.pc.on("track")
        def _on_track(track: Any) -> None:
            if track.kind == "video":
                self.video_track = track
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames += 1
                    self.frame_times.append(time.monotonic())
                    self.sizes.add((frame.width, frame.height))
                    if self.first_frame_at is None:
                        self.first_frame_at = time.monotonic()
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            pass
        if track.kind == "video":
            self.ended.set()

    async def start(self, signal: Signal) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if self.impairment is not None:
            self.impairment.install(self.pc)
        self.requested_at = time.monotonic()
        answer, self.resource_id = await signal(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return self.resource_id

    @property
    def first_frame_seconds(self) -> float | None:
        if self.first_frame_at is None:
            return None
        return self.first_frame_at - self.requested_at

    def freezes(self, since: float, until: float, longer_than: float = 0.5) -> list[float]:
        """Gaps between decoded frames in [since, until] longer than `longer_than` s."""
        times = [since, *(t for t in self.frame_times if since <= t <= until), until]
        return [b - a for a, b in itertools.pairwise(times) if b - a > longer_than]

    def frames_between(self, since: float, until: float) -> int:
        return sum(1 for t in self.frame_times if since <= t <= until)

    async def wait_frames(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.frames < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.frames >= n

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
