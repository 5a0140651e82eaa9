"""Forward mode: the trainer's own encoded video goes to the sites without a decode and an
encode, when it suits them (issue 13, Build 6).

aiortc's receiver reassembles the publisher's RTP into encoded frames (VP8 frames, or
H.264 access units in Annex B) in its jitter buffer and puts each on its decoder thread's
queue. `ForwardTap` wraps that queue's `put`: every encoded frame is first offered to the
broadcast (which hands it to the sites on the top layer, the GOP cache and the
recording), and reaches the decoder only while something still needs decoded pictures (a
site on a lower layer, a site whose codec differs, the HLS packager, the way back to
encoding). When decoding resumes it starts at a keyframe, asked for by PLI.

`Forwarder` holds the rules: which codec the publisher sends, its picture size (from the
keyframes) and bitrate (over the last seconds), and whether that suits the lecture's top
layer (`suits`): the same height or smaller, a bitrate within `BITRATE_TOLERANCE` of the
layer's. State `encode` → `forward` at a publisher keyframe that suits; `forward` →
`handback` when it no longer does (the encoder starts again, the sites keep the forwarded
frames until its first keyframe) → `encode`. Keyframe requests (PLI) to the publisher are
rate-limited. Nothing here touches Flask or the database; it all runs on the engine loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import av

log = logging.getLogger(__name__)

#: Settings of `YUANJIAO_FORWARD`.
MODES = ("auto", "off")
#: The publisher's bitrate may exceed the top layer's by this factor (encoders overshoot
#: on busy pictures) before its frames stop suiting the sites.
BITRATE_TOLERANCE = 1.5
#: The publisher's bitrate (its delta frames': the keyframes that joining and lossy sites
#: ask for would otherwise count against it) is measured over this long ...
BITRATE_WINDOW = 4.0
#: ... and judged only once this much of it is there.
BITRATE_MIN_SPAN = 2.0
#: After a hand-back to encoding, forwarding is tried again after this long at the soonest.
RETRY_SECONDS = 10.0
#: PLIs to the publisher at most this often (joining sites, lossy sites, decode resuming).
PLI_MIN_INTERVAL = 1.0
#: A joining site gets the frames since the publisher's last keyframe when that keyframe
#: is at most this old (more would be a long burst); else it waits for one, asked by PLI.
GOP_SECONDS = 1.0
GOP_FRAMES = 45

ENCODE, FORWARD, HANDBACK = "encode", "forward", "handback"


def codec_of(mime_type: str) -> str | None:
    """Our codec name for an aiortc codec's MIME type ("video/VP8" → "vp8")."""
    return {"video/vp8": "vp8", "video/h264": "h264"}.get(mime_type.lower())


def h264_nal_types(data: bytes) -> list[int]:
    """The NAL unit types of an Annex B access unit (aiortc's depayloader output)."""
    types = []
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def is_keyframe(codec: str, data: bytes) -> bool:
    if not data:
        return False
    if codec == "vp8":
        return not data[0] & 0x01  # frame tag: P bit 0 is a key frame (RFC 6386 9.1)
    return 5 in h264_nal_types(data)  # an IDR slice


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame's header."""
    if len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return (int.from_bytes(data[6:8], "little") & 0x3FFF,
            int.from_bytes(data[8:10], "little") & 0x3FFF)


def h264_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an H.264 IDR access unit, by decoding it alone (keyframes are
    rare: one decode every few seconds, not every frame)."""
    try:
        context = av.CodecContext.create("h264", "r")
        frames = list(context.decode(av.Packet(data)))
        frames += list(context.decode(None))
    except (av.FFmpegError, ValueError):
        return None
    return (frames[0].width, frames[0].height) if frames else None


def frame_size(codec: str, data: bytes) -> tuple[int, int] | None:
    return vp8_size(data) if codec == "vp8" else h264_size(data)


class Forwarder:
    """One broadcast's forward mode: the rules, and the tap on the publisher's receiver.

    `on_frame(codec, data, is_keyframe)` is the broadcast's: called for every encoded
    frame while forwarding (state `forward` or `handback`). `needs_decode()` says whether
    anything wants decoded pictures now. Both run on the engine loop.
    """

    def __init__(self, setting: str, height: int, bitrate_kbps: int, *,
                 on_frame: Callable[[str, bytes, bool], None],
                 needs_decode: Callable[[], bool]) -> None:
        self.setting = setting if setting in MODES else "auto"
        self.height_limit = int(height)
        self.bitrate_limit = int(bitrate_kbps)
        self._on_frame = on_frame
        self._needs_decode = needs_decode
        self.state = ENCODE
        self.codec: str | None = None
        #: The codec the publisher negotiated, before its first frame arrives.
        self.expected: str | None = None
        self.width = 0
        self.height = 0
        self.reason = "off" if self.setting == "off" else "waiting for a keyframe"
        self.frames = 0
        self.keyframes = 0
        self.forwarded = 0
        self.decoded = 0
        self.plis = 0
        self.handbacks = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_bytes = 0
        self._retry_at = 0.0
        self._decoding = True
        self._receiver: Any = None
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- the tap -------------------------------------------------------------------------

    def install(self, receiver: Any, negotiated: list[Any] | None = None) -> None:
        """Wrap the publisher's video receiver's decoder queue (call before it connects;
        a replacing publisher's receiver is installed again). `negotiated`: the codecs of
        the publisher's answer, the first of which it will send."""
        self._receiver = receiver
        self.expected = next((codec_of(c.mimeType) for c in negotiated or []
                              if codec_of(c.mimeType)), None)
        self._decoding = True
        queue = receiver._RTCRtpReceiver__decoder_queue
        original = queue.put

        def put(item: Any, *args: Any, **kwargs: Any) -> None:
            if item is None or receiver is not self._receiver:
                original(item, *args, **kwargs)
                return
            codec, frame = item
            try:
                decode = self.on_encoded(codec.mimeType, frame.data,
                                         media_time=frame.timestamp / 90000)
            except Exception:
                log.exception("forwarding a frame failed")
                decode = True
            if decode:
                self.decoded += 1
                original(item, *args, **kwargs)

        queue.put = put

    def on_encoded(self, mime_type: str, data: bytes, now: float | None = None,
                   media_time: float | None = None) -> bool:
        """One encoded frame from the publisher (`media_time`: its RTP timestamp in
        seconds): forward it if so decided; whether the decoder gets it too."""
        now = time.monotonic() if now is None else now
        # The bitrate is judged on the publisher's own clock: frames that reach us in a
        # burst (a starved loop, a stalled network) are not a higher bitrate.
        at = media_time if media_time is not None else now
        if self._window and at < self._window[-1][0]:
            self._window.clear()
            self._window_bytes = 0
        codec = codec_of(mime_type)
        if codec is None:
            return True
        if codec != self.codec:
            if self.state != ENCODE:
                self._hand_back(now, "the publisher's codec changed")
            self.codec, self.width, self.height = codec, 0, 0
            self._window.clear()
            self._window_bytes = 0
        key = is_keyframe(codec, data)
        self.frames += 1
        if not key:  # keyframes asked for by joining or lossy sites are not its rate
            self._window.append((at, len(data)))
            self._window_bytes += len(data)
        while self._window and self._window[0][0] < at - BITRATE_WINDOW:
            self._window_bytes -= self._window.popleft()[1]
        if key:
            self.keyframes += 1
            if self._pli_timer is not None:  # this keyframe serves the deferred request
                self._pli_timer.cancel()
                self._pli_timer = None
            size = frame_size(codec, data)
            if size is not None:
                self.width, self.height = size
        self._evaluate(now, key)
        if self.state != ENCODE:
            self.forwarded += 1
            self._on_frame(codec, data, key)
        return self._decode_gate(key)

    def _decode_gate(self, key: bool) -> bool:
        if self.state == ENCODE or self._needs_decode():
            if self._decoding:
                return True
            if key:
                self._decoding = True
                return True
            self.request_keyframe()  # a decoder must start at a keyframe
            return False
        self._decoding = False
        return False

    # --- the rules -----------------------------------------------------------------------

    @property
    def bitrate_kbps(self) -> float | None:
        """The publisher's video bitrate over the last seconds (None while too short)."""
        if len(self._window) < 2:
            return None
        span = self._window[-1][0] - self._window[0][0]
        if span < BITRATE_MIN_SPAN:
            return None
        return self._window_bytes * 8 / span / 1000

    def suits(self) -> tuple[bool, str]:
        """Whether the publisher's frames suit every site on the top layer, and why not."""
        if self.setting == "off":
            return False, "off"
        if self.codec is None or not self.height:
            return False, "waiting for a keyframe"
        if self.height > self.height_limit:
            return False, (f"the publisher's {self.height}p is above the lecture's "
                           f"{self.height_limit}p")
        rate = self.bitrate_kbps
        if rate is not None and rate > self.bitrate_limit * BITRATE_TOLERANCE:
            return False, (f"the publisher's {rate:.0f} kb/s is above the lecture's "
                           f"{self.bitrate_limit} kb/s")
        return True, ""

    def _evaluate(self, now: float, key: bool) -> None:
        ok, reason = self.suits()
        if self.state == ENCODE:
            self.reason = reason or self.reason
            if ok and key and now >= self._retry_at:
                self.state = FORWARD
                self.reason = ""
                log.info("forward mode: %s %dx%d", self.codec, self.width, self.height)
        elif self.state == FORWARD and not ok:
            self._hand_back(now, reason)

    def _hand_back(self, now: float, reason: str) -> None:
        log.info("forward mode off: %s", reason)
        self.state = HANDBACK
        self.reason = reason
        self.handbacks += 1
        self._retry_at = now + RETRY_SECONDS

    def handed_back(self) -> None:
        """The encoder's first keyframe went out: the sites are on encoded frames again."""
        if self.state == HANDBACK:
            self.state = ENCODE

    def preferred_codec(self) -> str | None:
        """The codec a joining site should take if it can: the forwarded one, or before
        the publisher's first frame the one it negotiated (no encode for that site)."""
        if self.state == FORWARD:
            return self.codec
        if self.setting != "off" and self.codec is None:
            return self.expected
        return None

    def replaces(self, key: tuple[str, str]) -> bool:
        """Whether the forwarded frames stand for this (codec, layer) encoder's output."""
        return self.state == FORWARD and key == (self.codec, "high")

    def feeds(self, key: tuple[str, str]) -> bool:
        """Whether forwarded frames go to this (codec, layer) source now."""
        return self.state != ENCODE and key == (self.codec, "high")

    # --- keyframes -----------------------------------------------------------------------

    def request_keyframe(self) -> bool:
        """A PLI to the publisher, at most once per `PLI_MIN_INTERVAL`: a request within
        that time is kept and sent when it ends, unless a keyframe came meanwhile (a site
        that cleared its queue waits for a keyframe; a dropped request would leave it
        waiting for the publisher's own next one). Whether a PLI went out now."""
        now = time.monotonic()
        receiver = self._receiver
        if receiver is None:
            return False
        wait = self._last_pli + PLI_MIN_INTERVAL - now
        if wait > 0:
            if self._pli_timer is None:
                self._pli_timer = asyncio.get_running_loop().call_later(
                    wait, self._deferred_keyframe)
            return False
        ssrc = self._media_ssrc(receiver)
        if ssrc is None:
            return False
        self._last_pli = now
        self.plis += 1
        task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _deferred_keyframe(self) -> None:
        self._pli_timer = None
        self.request_keyframe()

    @staticmethod
    def _media_ssrc(receiver: Any) -> int | None:
        rtx = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", {})
        streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
        return next((ssrc for ssrc in streams if ssrc not in rtx), None)

    def describe(self) -> dict[str, Any]:
        rate = self.bitrate_kbps
        return {"setting": self.setting, "state": self.state, "codec": self.codec,
                "width": self.width, "height": self.height,
                "bitrate_kbps": round(rate, 1) if rate is not None else None,
                "reason": self.reason or None, "frames": self.frames,
                "forwarded": self.forwarded, "decoded": self.decoded,
                "keyframes": self.keyframes, "plis": self.plis, "handbacks": self.handbacks}
