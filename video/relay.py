"""The relay's media plumbing, on the engine's asyncio loop: encode once, fan packets out.

aiortc's `RTCRtpSender` packetizes without encoding when its track returns `av.Packet`-like
objects instead of frames (`Encoder.pack`). So the trainer's stream is decoded once (by the
publisher's receiver), scaled and encoded once per codec here, and every site's sender
gets the same encoded packets through its own small queue.

Everything in this module runs on the engine loop (the encoders in its executor); nothing
here touches Flask or the database.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)
#: 40 ms Opus packets: half the packets of the usual 20 ms, and the per-packet cost is what
#: every added site pays (sending, SRTP); 20 ms more delay does not matter in a lecture.
AUDIO_SAMPLES_PER_PACKET = 1920
#: A regular keyframe, so that a site that lost packets recovers without asking.
KEYFRAME_INTERVAL = 2.5
#: Keyframes asked for by joining sites or PLIs are granted at most this often.
KEYFRAME_REQUEST_MIN_INTERVAL = 1.0
#: A joining site gets the frames since the last keyframe when it is at most this old,
#: instead of waiting for a new one (rate-limited, so a burst of joins would wait up to 1 s).
GOP_CACHE_SECONDS = 1.0
#: A subscriber more than this many packets behind is cut back to the next keyframe.
VIDEO_QUEUE_LIMIT = 60
AUDIO_QUEUE_LIMIT = 100

#: A site's video bursts leave at most this many times its layer's bitrate ...
PACING_FACTOR = 1.5
#: ... beyond a burst of this long at that rate (ordinary frames fit in it).
PACING_BURST_SECONDS = 0.04

VIDEO_CODECS = {"vp8": ("libvpx", "video/VP8"), "h264": ("libx264", "video/H264")}


class EncodedPacket:
    """One encoded frame, shared read-only by every subscriber's sender.

    It has what aiortc's `Vp8Encoder.pack`/`OpusEncoder.pack` read (`bytes()`, `pts`,
    `time_base`); unlike an `av.Packet` it is never rebased or re-streamed by a muxer,
    so sharing it between senders and the recorder is safe.
    """

    __slots__ = ("data", "is_keyframe", "pts", "rtp", "tails", "time_base")

    def __init__(self, data: bytes, pts: int, time_base: fractions.Fraction,
                 is_keyframe: bool) -> None:
        self.data = data
        self.pts = pts
        self.time_base = time_base
        self.is_keyframe = is_keyframe
        #: (RTP payloads, RTP timestamp, padding flags or None) when its source packetizes
        #: once for every site (`video.fastsend`); None otherwise.
        self.rtp: tuple[list[bytes], int, list[int] | None] | None = None
        #: `video.fastsend`'s packets after their 12-byte headers, by header extensions
        #: (the same for every site with those): (tails, payload bytes).
        self.tails: dict[bytes, tuple[list[bytes], int]] | None = None

    def __bytes__(self) -> bytes:
        return self.data

    def to_av(self) -> av.Packet:
        """A fresh `av.Packet` (H.264's `pack` and the muxer want the real type)."""
        packet = av.Packet(self.data)
        packet.pts = packet.dts = self.pts
        packet.time_base = self.time_base
        packet.is_keyframe = self.is_keyframe
        return packet


class SubscriberTrack(MediaStreamTrack):
    """A site's outgoing track: a bounded queue of shared packets.

    A lagging site never slows the others: when its queue is full the oldest packets
    are dropped and (for video) it waits for the next keyframe, which it asks for.

    A video track can move to another layer's source (`switch_to`): it keeps the packets
    of its current layer until the target layer's next keyframe, then takes that layer's
    packets from that keyframe on (the decoder sees a keyframe at the new size, and the
    timestamps keep growing). `switch_to(None)` stops the video (audio-only layer).
    """

    def __init__(self, kind: str, source: PacketSource | None, *,
                 as_av_packet: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._pending: PacketSource | None = None
        self._queue: collections.deque[Any] = collections.deque()
        self._wakeup = asyncio.Event()
        self._limit = VIDEO_QUEUE_LIMIT if kind == "video" else AUDIO_QUEUE_LIMIT
        self._waiting_for_keyframe = kind == "video"
        self._as_av_packet = as_av_packet
        self._last_pts = -1
        self.packets_sent = 0
        self.packets_dropped = 0
        self.first_packet_at: float | None = None
        #: Called with the layer name once a switch is done (at the new layer's keyframe).
        self.on_switched: Callable[[str], None] | None = None
        #: Set by a `video.fastsend.FastSender`: called on each push instead of waking
        #: `recv` (the packets are taken with `take`).
        self.on_ready: Callable[[], None] | None = None

    @property
    def source(self) -> PacketSource | None:
        return self._source

    @property
    def layer(self) -> str:
        """The layer whose packets this site receives now ("audio": no video)."""
        return self._source.layer if self._source is not None else "audio"

    @property
    def pending_layer(self) -> str | None:
        return self._pending.layer if self._pending is not None else None

    def push(self, packet: EncodedPacket) -> None:
        """Queue a packet for this site (called by the source, on the loop)."""
        if self.readyState != "live":
            return
        if packet.pts < self._last_pts:
            return  # a site's timestamps only grow, whatever layer a packet comes from
        if self._waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            self._waiting_for_keyframe = False
        if len(self._queue) >= self._limit:
            self.packets_dropped += len(self._queue)
            self._queue.clear()
            if self.kind == "video" and not packet.is_keyframe:
                self._waiting_for_keyframe = True
                self.request_keyframe()
                return
        self._last_pts = packet.pts
        on_ready = self.on_ready
        if on_ready is not None:
            self._queue.append(packet)  # the fast sender packs the shared packet itself
            on_ready()
            return
        self._queue.append(packet.to_av() if self._as_av_packet else packet)
        self._wakeup.set()

    def take(self) -> Any:
        """The next packet or None, without waiting (`video.fastsend`'s side of `recv`)."""
        if not self._queue:
            return None
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        self.packets_sent += 1
        packet = self._queue.popleft()
        if isinstance(packet, av.Packet):  # queued before the fast sender started
            packet = EncodedPacket(bytes(packet), int(packet.pts or 0),
                                   packet.time_base or VIDEO_TIME_BASE,
                                   bool(packet.is_keyframe))
        return packet

    def packetize(self, packet: EncodedPacket) -> tuple[list[bytes], int, list[int] | None]:
        """A packet its source did not packetize: by the source this track is on."""
        source = self._source or self._pending
        if source is None or source.packetize is None:
            raise MediaStreamError
        return source.packetize(packet)

    async def recv(self) -> Any:
        """The next packet; aiortc's sender packetizes it without encoding."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        self.packets_sent += 1
        return self._queue.popleft()

    def request_keyframe(self) -> None:
        """This site's PLI/FIR: a rate-limited request on its layer's encoder (or, while
        it waits to switch, on the target layer's)."""
        source = self._pending or self._source
        if source is not None:
            source.request_keyframe()

    def switch_to(self, source: PacketSource | None) -> None:
        """Move to another layer at its next keyframe (asked for now), or stop the video."""
        if self._pending is not None:
            self._pending.detach(self)
            self._pending = None
        if source is self._source:
            return
        if source is None:
            if self._source is not None:
                self._source.detach(self)
            self._source = None
            self._notify()
            return
        self._pending = source
        source.attach_pending(self)

    def complete_switch(self, source: PacketSource) -> None:
        """The target layer has a keyframe to publish: from it on, take that layer."""
        if source is not self._pending:
            return
        if self._source is not None:
            self._source.detach(self)
        self._pending = None
        self._source = source
        source.tracks.add(self)
        self._waiting_for_keyframe = True  # the keyframe comes next, in this publish
        self._notify()

    def _notify(self) -> None:
        if self.on_switched is not None:
            try:
                self.on_switched(self.layer)
            except Exception:
                log.exception("layer switch callback failed")

    def stop(self) -> None:
        super().stop()
        if self._source is not None:
            self._source.detach(self)
        if self._pending is not None:
            self._pending.detach(self)
        self._wakeup.set()


class PacketSource:
    """The packets of one encoder (one codec and layer), and the tracks fed from them."""

    def __init__(self, kind: str, on_keyframe_request: Callable[[], None] | None = None,
                 layer: str = "high") -> None:
        self.kind = kind
        self.layer = layer if kind == "video" else "audio"
        self.tracks: set[SubscriberTrack] = set()
        #: Tracks that move here at this source's next keyframe.
        self.pending: set[SubscriberTrack] = set()
        self._on_keyframe_request = on_keyframe_request
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        #: Packets since the last keyframe (video), while it is recent.
        self._gop: list[EncodedPacket] = []
        self._gop_started = 0.0
        #: How old a cached keyframe may be, and how many frames the cache holds (forward
        #: mode caches the publisher's longer groups of pictures).
        self.gop_seconds = GOP_CACHE_SECONDS
        self.gop_frames = 60
        #: Set when the sites' fast send path is on (`video.fastsend.packetizer`): each
        #: packet is packetized once here, for every site.
        self.packetize: Callable[[EncodedPacket],
                                 tuple[list[bytes], int, list[int] | None]] | None = None

    @property
    def watched(self) -> bool:
        """Someone gets, or waits for, this source's packets (else it need not encode)."""
        return bool(self.tracks or self.pending)

    def attach(self, track: SubscriberTrack) -> None:
        """Add a site: it starts at a keyframe, a recent cached one or a new one."""
        self.tracks.add(track)
        if self.kind != "video":
            return
        if self._gop and time.monotonic() - self._gop_started <= self.gop_seconds:
            # The whole cached group reaches the site's queue (else it would wait again);
            # an edge's RTP output has no queue (it sends at once).
            if isinstance(track, SubscriberTrack):
                track._limit = max(track._limit, len(self._gop) + VIDEO_QUEUE_LIMIT // 2)
            for packet in self._gop:
                track.push(packet)
        else:
            self.request_keyframe()

    def attach_pending(self, track: SubscriberTrack) -> None:
        """A site switching to this layer: it joins at the next keyframe, asked for now
        (rate-limited by this layer's encoder only)."""
        self.pending.add(track)
        self.request_keyframe()

    def detach(self, track: SubscriberTrack) -> None:
        self.tracks.discard(track)
        self.pending.discard(track)

    def request_keyframe(self) -> None:
        if self._on_keyframe_request is not None:
            self._on_keyframe_request()

    def take_switches(self, packets: list[EncodedPacket]) -> None:
        """Before any source publishes a frame: the sites waiting for this layer move
        here if the frame is a keyframe (so none gets the same frame from two layers)."""
        if self.pending and any(p.is_keyframe for p in packets):
            for track in tuple(self.pending):
                self.pending.discard(track)
                track.complete_switch(self)

    def publish(self, packet: EncodedPacket) -> None:
        """Hand one packet to every site (the same object, no copy)."""
        self.packets += 1
        self.bytes += len(packet.data)
        if packet.is_keyframe:
            self.keyframes += 1
        if self.packetize is not None and packet.rtp is None:
            packet.rtp = self.packetize(packet)
        if self.kind == "video":
            if packet.is_keyframe:
                self._gop = [packet]
                self._gop_started = time.monotonic()
            elif self._gop and len(self._gop) < self.gop_frames:
                self._gop.append(packet)
            else:
                self._gop = []
        for track in tuple(self.tracks):
            track.push(packet)

    def end(self) -> None:
        """The broadcast ended: end every subscriber track."""
        for track in (*self.tracks, *self.pending):
            track.stop()


class BurstPacer:
    """Spreads one site's bursts of video packets (a keyframe, frames released together
    after a stall) at `PACING_FACTOR` x its layer's bitrate (or its receiver's estimate of
    its link when lower, down to the layer's bitrate), so that a narrow link's queue does
    not overflow; ordinary frames pass at once.

    It wraps the site's DTLS transport's `_send_rtp`: a media video packet that would leave
    more than `PACING_BURST_SECONDS` ahead of the paced schedule waits for its slot (the
    sender's loop waits with it; the site's own packet queue absorbs that). Audio,
    retransmissions and RTCP never wait, but their bytes count.
    """

    def __init__(self, rate_kbps: Callable[[], float], video_ssrcs: set[int],
                 estimate_kbps: Callable[[], float | None] | None = None) -> None:
        self._rate_kbps = rate_kbps
        self._video_ssrcs = video_ssrcs
        #: The receiver's estimate of its link (REMB): bursts leave no faster than it
        #: (but never slower than the layer's own bitrate).
        self._estimate_kbps = estimate_kbps
        self._next = 0.0
        self.waits = 0
        self.waited = 0.0
        #: Set to send the next video packet one position late (after the one following
        #: it): the receiver sees a gap and NACKs every hole it still has (`probe_seq` is
        #: the late one's sequence number; it arrives right after).
        self.probe_requested = False
        self.probes = 0
        self.probe_seq: int | None = None
        #: When the late packet left (None while it waits): a NACK that lists it more
        #: than a round trip later means it was lost on the link, not late.
        self.probe_sent_at: float | None = None
        self._held: bytes | None = None
        self._flushing: asyncio.Future | None = None

    def probe_in_flight(self, seq: int, now: float, rtt: float) -> bool:
        """A NACK for `seq` is the one the late packet provoked (it was listed before it
        arrived): the probe, still held or sent less than a round trip (+ margin) ago.
        Later, a NACK that lists it means the link lost it, and it must be re-sent."""
        if seq != self.probe_seq:
            return False
        return self.probe_sent_at is None or now - self.probe_sent_at <= 1.25 * rtt + 0.03

    def rate(self) -> float:
        """The paced rate now, in bytes per second."""
        layer = max(64.0, self._rate_kbps())
        kbps = layer * PACING_FACTOR
        estimate = self._estimate_kbps() if self._estimate_kbps is not None else None
        if estimate:
            kbps = min(kbps, max(layer, estimate))
        return kbps * 1000 / 8

    def slot(self, size: int, now: float, rate: float | None = None) -> float:
        """Book `size` bytes on the paced schedule (at `rate`, bytes/s, when the caller
        already has it); returns how long a video packet of that size waits for its slot
        (positive once the burst credit is spent)."""
        if rate is None:
            rate = self.rate()
        start = max(self._next, now - PACING_BURST_SECONDS)
        self._next = start + size / rate
        return self._next - now

    def admit(self, size: int, now: float, rate: float, max_wait: float) -> bool:
        """Book `size` bytes (a frame's packets, one after the other) if the last of them
        would wait at most `max_wait`: the same schedule as booking each (`slot`)."""
        end = max(self._next, now - PACING_BURST_SECONDS) + size / rate
        if end - now > max_wait:
            return False
        self._next = end
        return True

    def hold(self, data: bytes, seq: int) -> None:
        """Keep back the video packet `seq` as the NACK probe (`probe_requested`)."""
        self.probe_requested = False
        self.probes += 1
        self._held = data
        self.probe_seq = seq
        self.probe_sent_at = None

    def install(self, transport: Any) -> None:
        """Wrap `transport._send_rtp` (aiortc's senders; `video.fastsend` calls `slot`
        and `hold` itself and wraps only so that RTCP's bytes count)."""
        original = transport._send_rtp

        def flush(held: bytes) -> None:
            if self._held is held:  # no video packet followed within 100 ms
                self._held = None
                self.probe_sent_at = time.monotonic()
                self._flushing = asyncio.ensure_future(original(held))

        async def send(data: bytes) -> None:
            wait = self.slot(len(data), time.monotonic())
            video = len(data) >= 12 and not 192 <= data[1] <= 223 \
                and int.from_bytes(data[8:12], "big") in self._video_ssrcs
            if wait > 0.002 and video:
                self.waits += 1
                self.waited += wait
                await asyncio.sleep(wait)
            if video and self._held is not None:
                held, self._held = self._held, None
                await original(data)
                self.probe_sent_at = time.monotonic()
                await original(held)
                return
            if video and self.probe_requested:
                self.hold(data, int.from_bytes(data[2:4], "big"))
                asyncio.get_running_loop().call_later(0.1, flush, data)
                return
            await original(data)

        transport._send_rtp = send


class RetransmitHistory(dict):
    """A video sender's packets of the last `seconds`, for retransmission.

    aiortc keeps the last 128 packets of a sender (`seq % 128` → packet): under a second
    of the top layer, so a congested site's hole was often gone before its NACK could be
    answered twice, and an aiortc receiver then waits 512 packets on it. This replaces that
    dict: aiortc still writes every packet into it, and it also keeps each packet by its
    full sequence number for a time; `restore` puts one back where aiortc's `_retransmit`
    reads it.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        #: seq -> (when first sent, the packet), oldest first.
        self.packets: dict[int, tuple[float, Any]] = {}
        self._order: collections.deque[tuple[float, int]] = collections.deque()
        #: The newest sequence number sent (None before the first packet).
        self.newest: int | None = None

    def __setitem__(self, key: int, packet: Any) -> None:
        super().__setitem__(key, packet)
        now = time.monotonic()
        seq = packet.sequence_number
        self.packets[seq] = (now, packet)
        self.newest = seq
        order = self._order
        order.append((now, seq))
        horizon = now - self.seconds
        while order[0][0] < horizon:
            _, old = order.popleft()
            entry = self.packets.get(old)
            if entry is not None and entry[0] < horizon:
                del self.packets[old]

    def lookup(self, seq: int) -> tuple[float, Any] | None:
        """(when it was first sent, the packet), or None when it is too old."""
        return self.packets.get(seq)

    def restore(self, seq: int, size: int = 128) -> None:
        entry = self.packets.get(seq)
        if entry is not None:
            dict.__setitem__(self, seq % size, entry[1])


class SharedVideoEncoder:
    """One video encoder for every site: scales the trainer's frames and encodes them.

    Keyframes come at a regular interval and on request, at most once a second, so a
    site joining or losing packets costs every other site at most one keyframe a second.
    """

    def __init__(self, codec: str, *, bitrate_kbps: int, height: int, fps: int = 30,
                 layer: str = "high") -> None:
        self.codec_name = codec
        self.layer = layer
        self.bitrate = max(100, int(bitrate_kbps)) * 1000
        self.target_height = max(90, int(height))
        self.fps = fps
        self.context: av.VideoCodecContext | None = None
        self.width = 0
        self.height = 0
        self._last_keyframe = 0.0
        self._keyframe_requested = True
        self._last_request_granted = 0.0
        #: Set by the pump when it skipped a frame (nobody on this layer).
        self.idle = False
        self.frames = 0
        self.seconds = 0.0

    def request_keyframe(self) -> None:
        """Ask for a keyframe; granted at the next frame unless one was given < 1 s ago."""
        self._keyframe_requested = True

    def _size_for(self, frame: av.VideoFrame) -> tuple[int, int]:
        height = min(self.target_height, frame.height)
        width = round(frame.width * height / frame.height)
        return max(2, width - width % 2), max(2, height - height % 2)

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        ctx = cast(av.VideoCodecContext,
                   av.CodecContext.create(VIDEO_CODECS[self.codec_name][0], "w"))
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = fractions.Fraction(self.fps, 1)
        ctx.bit_rate = self.bitrate
        # Our own keyframe clock decides; the codec must not add its own.
        ctx.gop_size = 100000
        if self.codec_name == "vp8":
            ctx.qmin, ctx.qmax = 2, 56
            ctx.options = {
                "bufsize": str(self.bitrate), "minrate": str(self.bitrate),
                "maxrate": str(self.bitrate), "cpu-used": "-6", "deadline": "realtime",
                "lag-in-frames": "0", "static-thresh": "1", "undershoot-pct": "100",
                "overshoot-pct": "15", "noise-sensitivity": "4", "partitions": "0",
                "error-resilient": "1",
            }
            ctx.thread_count = 2 if width * height >= 640 * 480 else 1
        else:
            ctx.profile = "Baseline"
            ctx.options = {"level": "31", "tune": "zerolatency", "preset": "veryfast"}
        self.width, self.height = width, height
        self._keyframe_requested = True
        return ctx

    def encode(self, frame: av.VideoFrame, pts: int) -> list[EncodedPacket]:
        """Encode one frame (runs in the engine's executor, one encoder call at a time)."""
        started = time.perf_counter()
        width, height = self._size_for(frame)
        now = time.monotonic()
        if self.idle:
            # Nobody watched this layer for a while: its rate control would take the gap
            # as spare budget, and its references are stale; start afresh (a keyframe).
            self.context = None
            self.idle = False
        if self.context is None or (width, height) != (self.width, self.height):
            self.context = self._open(width, height)
        if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        keyframe = now - self._last_keyframe >= KEYFRAME_INTERVAL or (
            self._keyframe_requested
            and now - self._last_request_granted >= KEYFRAME_REQUEST_MIN_INTERVAL
        )
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = (av.video.frame.PictureType.I if keyframe
                           else av.video.frame.PictureType.NONE)
        if keyframe:
            self._last_keyframe = now
            if self._keyframe_requested:
                self._last_request_granted = now
            self._keyframe_requested = False
        out = []
        for packet in self.context.encode(frame):
            out.append(EncodedPacket(bytes(packet), pts, VIDEO_TIME_BASE,
                                     bool(packet.is_keyframe)))
        self.frames += 1
        self.seconds += time.perf_counter() - started
        return out


class SharedAudioEncoder:
    """One Opus encoder for every site; packets carry 48 kHz timestamps."""

    def __init__(self, bitrate: int = 64000) -> None:
        self.context = av.CodecContext.create("libopus", "w")
        self.context.bit_rate = bitrate
        self.context.sample_rate = 48000
        self.context.format = "s16"
        self.context.layout = "stereo"
        self.context.time_base = AUDIO_TIME_BASE
        self.context.options = {
            "application": "voip",
            "frame_duration": str(AUDIO_SAMPLES_PER_PACKET * 1000 // 48000),
            # Audio first on poor links: in-band FEC (each packet carries a coarse copy
            # of the previous one; browsers' decoders use it to conceal a lost packet).
            "fec": "1",
            "packet_loss": "10",
        }
        self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000,
                                           frame_size=AUDIO_SAMPLES_PER_PACKET)
        self._next_pts: int | None = None

    def encode(self, frame: av.AudioFrame, wall_pts: int) -> list[EncodedPacket]:
        """Encode; timestamps follow the sample count, resynced to the wall clock on gaps."""
        out = []
        for chunk in self.resampler.resample(frame):
            for packet in self.context.encode(chunk):
                # Follow the sample count; jump forward to the wall clock after a gap (the
                # publisher was replaced or stalled), never backwards: timestamps of a
                # stream must only grow (RTP receivers and the WebM muxer rely on it).
                if self._next_pts is None or wall_pts - self._next_pts > 48000 // 5:
                    self._next_pts = max(wall_pts, self._next_pts or 0)
                out.append(EncodedPacket(bytes(packet), self._next_pts, AUDIO_TIME_BASE, True))
                self._next_pts += AUDIO_SAMPLES_PER_PACKET
        return out

    @property
    def extradata(self) -> bytes | None:
        return self.context.extradata


class Recorder:
    """Muxes the already-encoded VP8 and Opus packets into WebM: no second encode.

    In forward mode with an H.264 publisher the video is H.264: the file is Matroska
    (WebM's parent format; PyAV, FFmpeg and Chromium play it), `codec` says which.
    """

    def __init__(self, path: str, audio_extradata: bytes | None) -> None:
        self.path = path
        #: The video codec of the file, fixed by its first keyframe (None before).
        self.codec: str | None = None
        self._audio_extradata = audio_extradata
        self.container: Any = None
        self.video_stream: Any = None
        self.audio_stream: Any = None
        self._pending_audio: list[EncodedPacket] = []
        self._origin: dict[str, int] = {}
        self._last_ms: dict[int, int] = {}
        self.first_pts_seconds: float | None = None
        self.last_pts_seconds = 0.0
        self.failed = False
        #: Why it stopped: "disk_full" (no space left) or "write_failed"; the broadcast
        #: goes on without a recording and the live API says so.
        self.error: str | None = None

    def _fail(self, exc: BaseException) -> None:
        log.error("recording %s stopped: %s", self.path, exc)
        self.failed = True
        self.error = "disk_full" if getattr(exc, "errno", None) in (
            errno.ENOSPC, errno.EDQUOT) else "write_failed"

    def _open(self, width: int, height: int, codec: str = "vp8") -> None:
        self.codec = codec
        self.container = av.open(self.path, mode="w",
                                 format="webm" if codec == "vp8" else "matroska")
        self.video_stream = self.container.add_stream(
            "libvpx" if codec == "vp8" else "h264", rate=30)
        self.video_stream.width, self.video_stream.height = width, height
        self.video_stream.pix_fmt = "yuv420p"
        self.video_stream.time_base = fractions.Fraction(1, 1000)
        self.audio_stream = self.container.add_stream("libopus", rate=48000)
        self.audio_stream.layout = "stereo"
        self.audio_stream.time_base = fractions.Fraction(1, 1000)
        if self._audio_extradata:
            self.audio_stream.codec_context.extradata = self._audio_extradata

    def write_video(self, packet: EncodedPacket, width: int, height: int,
                    codec: str = "vp8") -> None:
        if self.failed or self.codec not in (None, codec):
            return
        if self.container is None:
            if not packet.is_keyframe:
                return  # a recording starts on a keyframe
            try:
                self._open(width, height, codec)
            except Exception as exc:  # no space for the file: no recording, same broadcast
                self.container = None
                self._fail(exc)
                return
            self._origin["t"] = packet.pts  # 90 kHz
            for pending in self._pending_audio:
                self._mux(pending, self.audio_stream)
            self._pending_audio.clear()
        self._mux(packet, self.video_stream)

    def write_audio(self, packet: EncodedPacket) -> None:
        if self.failed:
            return
        if self.container is None:
            # Keep the last second of audio until the first keyframe opens the file.
            self._pending_audio.append(packet)
            del self._pending_audio[:-50]
            return
        self._mux(packet, self.audio_stream)

    def _mux(self, packet: EncodedPacket, stream: Any) -> None:
        origin_seconds = self._origin["t"] / 90000
        seconds = packet.pts * float(packet.time_base) - origin_seconds
        if seconds < 0:
            return
        millis = round(seconds * 1000)
        # Matroska refuses a timestamp that does not grow within a stream (EINVAL).
        last = self._last_ms.get(stream.index, -1)
        if millis <= last:
            millis = last + 1
        self._last_ms[stream.index] = millis
        av_packet = av.Packet(packet.data)
        av_packet.pts = av_packet.dts = millis
        av_packet.time_base = fractions.Fraction(1, 1000)
        av_packet.is_keyframe = packet.is_keyframe
        av_packet.stream = stream
        try:
            self.container.mux(av_packet)
        except Exception as exc:  # a full disk or a bad packet must not end the broadcast
            self._fail(exc)
            return
        if self.first_pts_seconds is None:
            self.first_pts_seconds = seconds
        self.last_pts_seconds = max(self.last_pts_seconds, seconds)

    def close(self) -> float:
        """Finish the file; returns the duration in seconds."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception as exc:
                self._fail(exc)
        return self.last_pts_seconds - (self.first_pts_seconds or 0.0)
