"""aiortc peers for media tests and the benchmark: a synthetic publisher, counting subscribers.

These run on the caller's own asyncio loop (not the engine's), like a remote client would.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

Signal = Callable[[str], Awaitable[tuple[str, str]]]  # offer sdp -> (answer sdp, resource id)


class MovingVideoTrack(VideoStreamTrack):
    """640x480 at 30 fps with a bar that moves, so every frame differs from the last."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self.width, self.height = width, height
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
        frame.pts, frame.time_base = pts, time_base
        return frame


def empty_config() -> RTCConfiguration:
    """No STUN at all: tests run on a closed network, over the loopback interface."""
    return RTCConfiguration(iceServers=[])


class Publisher:
    """A plain aiortc WHIP client, as OBS would be: synthetic video and silent audio."""

    def __init__(self, audio: bool = True, width: int = 640, height: int = 480,
                 certificate: Any = None) -> None:
        self.pc = RTCPeerConnection(configuration=empty_config())
        if certificate is not None:
            # aiortc has no public way to choose the certificate: set it before any
            # transport is made (transports take it when the first track is added).
            self.pc._RTCPeerConnection__certificates = [certificate]
        self.video = MovingVideoTrack(width, height)
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


class Subscriber:
    """A WHEP client that decodes and counts the frames it gets."""

    def __init__(self, audio: bool = True) -> None:
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
        self.requested_at = time.monotonic()
        answer, self.resource_id = await signal(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return self.resource_id

    @property
    def first_frame_seconds(self) -> float | None:
        if self.first_frame_at is None:
            return None
        return self.first_frame_at - self.requested_at

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
