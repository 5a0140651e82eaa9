"""The sites' RTP send path: packetize once per layer, one header and one SRTP call per
packet and site, datagrams batched per loop turn (issue 13, forward mode's cost per site).

aiortc's `RTCRtpSender` does all of a packet's work for each site: it packetizes the frame
again, builds an `RtpPacket` object with its header extensions, serializes it, then awaits
the DTLS transport (SRTP) and the ICE connection down to one `sendto` per packet. At 150
packets a second per site that was most of a site's cost (53 µs per packet and site).

Here the frames of a layer are packetized once (`PacketSource.packetize`: the payloads and
the RTP timestamp are kept on the shared `EncodedPacket`). Each site's sender (`FastSender`,
installed on an aiortc sender in place of its media loop) takes its frames from its
`SubscriberTrack` as before (the track's queue limit, keyframe waits and layer switches are
unchanged) and makes each packet by packing a 12-byte header (its own SSRC, sequence number
and timestamp offset) and its header extensions (a per-site template, the send time once
per batch) onto the shared payload, protects it with the site's own SRTP session, and
queues it on its site's `SiteOutput`. Once per loop turn (`SendHub.flush`) every output
sends its datagrams: equal-sized runs in one `sendmsg` with UDP GSO (`UDP_SEGMENT`), the
rest one `sendmsg` each. What aiortc's sender keeps for RTCP (packet and octet counts, the
last NTP and RTP timestamps, so sender reports and round-trip times stay right) is updated
once per batch; its RTCP task, its RTCP handling and the engine's wrappers stay as they are.

Loss recovery is the engine's, unchanged: the video history is a `RetransmitHistory` by
time (`SentHistory` keeps each packet's payload, marker and timestamp, not a packet object),
`_retransmit` re-sends from it (as RTX when negotiated), and the site's `BurstPacer` paces
bursts, counts every byte and holds the NACK probe's packet (`BurstPacer.slot`, `hold`).

A site whose selected ICE pair is not a plain UDP socket of ours (TURN, TCP) gets the same
packets through aiortc's DTLS transport (`_send_rtp`, ordered, one task per batch).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import clock
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import PACKET_MAX, VpxPayloadDescriptor
from aiortc.mediastreams import convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RtcpByePacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from video.relay import (
    VIDEO_TIME_BASE,
    BurstPacer,
    EncodedPacket,
    RetransmitHistory,
    SubscriberTrack,
)

log = logging.getLogger(__name__)

#: Linux's UDP generic segmentation offload (`<linux/udp.h>`): one `sendmsg` carries
#: several datagrams of one size (the last may be shorter); the kernel splits them.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: Segments per GSO send (the kernel's limit is 64 on older kernels) and bytes per send.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 60000
#: A paced video packet waits only when its slot is further off than this.
PACING_MIN_WAIT = 0.002
#: The NACK probe's held packet goes anyway when no video packet follows within this.
PROBE_HOLD_SECONDS = 0.1
#: A site's audio packet waits at most this long for its video's next frame, to leave
#: with it as the short last segment of the frame's GSO send (one system call, not two).
AUDIO_HOLD_SECONDS = 0.035
#: Sent video packets kept per site for NACKs, by sequence number modulo this (a power
#: of two above `RetransmitHistory.seconds` of the top layer's packets).
HISTORY_SLOTS = 4096
#: Each site gets one compound RTCP packet this often: a sender report per stream and
#: their SDES (aiortc sends one per stream, every 0.5-1.5 s, each from its own task).
REPORT_SECONDS = 1.0

_HEADER = struct.Struct("!BBHLL")
#: aiortc's DTLS transport's own counters of what it sent (its stats read them).
_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_TX_PACKETS = "_RTCDtlsTransport__tx_packets"
_U16 = struct.Struct("!H")
#: `UDP_SEGMENT`'s value: the segment size as the kernel's `__u16`, in host byte order.
_SEGMENT = struct.Struct("=H")

_gso: bool | None = None


def gso_available() -> bool:
    """Whether this kernel takes UDP GSO on loopback (tried once, by sending two)."""
    global _gso
    if _gso is None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                rx.bind(("127.0.0.1", 0))
                tx.sendmsg([b"x" * 100, b"y" * 60], [(SOL_UDP, UDP_SEGMENT,
                                                       _SEGMENT.pack(100))],
                           0, rx.getsockname())
                rx.settimeout(1)
                _gso = len(rx.recv(2000)) == 100 and len(rx.recv(2000)) == 60
        except OSError:
            _gso = False
    return _gso


#: A frame's RTP payloads, its RTP timestamp, and per payload the padding flag of its
#: first header byte (0x20: the payload ends with one byte of RTP padding) or None.
Packetized = tuple[list[bytes], int, list[int] | None]


class EvenVp8Packetizer:
    """VP8 frames in packets of one size: a frame of n packets is cut into n equal parts
    (the shorter ones get a byte of RTP padding), so that a site's packets of a frame are
    one GSO run whose short last segment can be its audio packet. The payload descriptor
    is aiortc's (a 15-bit picture id, running on per layer)."""

    def __init__(self) -> None:
        self.picture_id = random.randrange(1 << 15)

    def __call__(self, packet: EncodedPacket) -> Packetized:
        data = packet.data
        first = bytes(VpxPayloadDescriptor(partition_start=1, partition_id=0,
                                           picture_id=self.picture_id))
        rest = bytes(VpxPayloadDescriptor(partition_start=0, partition_id=0,
                                          picture_id=self.picture_id))
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        room = PACKET_MAX - len(first)
        count = max(1, -(-len(data) // room))
        base, longer = divmod(len(data), count)
        payloads: list[bytes] = []
        pads: list[int] = []
        pos = 0
        for i in range(count):
            size = base + 1 if i < longer else base
            payload = (rest if i else first) + data[pos:pos + size]
            pos += size
            if longer and i >= longer:
                payloads.append(payload + b"\x01")
                pads.append(0x20)
            else:
                payloads.append(payload)
                pads.append(0)
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        return payloads, timestamp, pads if longer else None


def packetizer(mime_type: str) -> Callable[[EncodedPacket], Packetized]:
    """One layer's packetizer, run once for every site: VP8 in even packets, the others
    by aiortc's own `pack`."""
    if mime_type.lower() == "video/vp8":
        return EvenVp8Packetizer()
    clock_rate = 48000 if mime_type.lower().startswith("audio/") else 90000
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime_type, clockRate=clock_rate,
                                                payloadType=96))
    if mime_type.lower() == "video/h264":
        return lambda packet: (*encoder.pack(packet.to_av()), None)

    def pack(packet: EncodedPacket) -> Packetized:
        payloads, timestamp = encoder.pack(packet)  # type: ignore[arg-type]
        return payloads, timestamp, None

    return pack


class SentHistory(RetransmitHistory):
    """A site's sent video packets for NACKs, in a ring by sequence number: each slot
    holds its frame's entry (first sequence number, sent at, payloads, timestamp, padding
    flags), shared by the frame's packets (one tuple per frame, not per packet), as long
    as younger than `seconds`; the engine's retransmission rules read it as any
    `RetransmitHistory`: seq -> (sent at, (payload, marker, timestamp, padding flag))."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self._ring: list[Any] = [None] * HISTORY_SLOTS

    def lookup(self, seq: int) -> tuple[float, Any] | None:
        entry = self._ring[seq & (HISTORY_SLOTS - 1)]
        if entry is None:
            return None
        first, sent_at, payloads, timestamp, pads = entry
        i = (seq - first) & 0xFFFF
        if i >= len(payloads) or time.monotonic() - sent_at > self.seconds:
            return None
        marker = 0x80 if i == len(payloads) - 1 else 0
        return sent_at, (payloads[i], marker, timestamp, pads[i] if pads else 0)

    def restore(self, seq: int, size: int = 128) -> None:
        """Nothing to put back: `FastSender._retransmit` reads the ring itself."""


class SendHub:
    """The senders of one broadcast with packets to send, flushed once per loop turn."""

    def __init__(self) -> None:
        self._dirty: dict[FastSender, None] = {}
        self._outputs: dict[SiteOutput, None] = {}
        self._scheduled = False
        #: Datagrams sent, those of them that went in GSO batches, and `sendmsg` calls.
        self.datagrams = 0
        self.datagrams_batched = 0
        self.send_batches = 0
        #: Datagrams that went through aiortc's transport (TURN, TCP, a full socket).
        self.datagrams_fallback = 0
        #: Compound RTCP reports sent (one per site and `REPORT_SECONDS`).
        self.reports = 0
        #: Audio packets that left with their site's video frame.
        self.audio_with_video = 0
        self.gso = gso_available()
        self._reporting: dict[SiteOutput, None] = {}
        self._report_timer: asyncio.TimerHandle | None = None
        #: Outputs holding audio for their next video frame, and until when (in the order
        #: they began to hold): one timer for them all, not one per site and packet.
        self.audio_held: dict[SiteOutput, float] = {}
        self._audio_timer: asyncio.TimerHandle | None = None

    def hold_audio(self, output: SiteOutput) -> None:
        """`output` holds audio from now: it goes at the latest `AUDIO_HOLD_SECONDS` on."""
        loop = asyncio.get_running_loop()
        self.audio_held[output] = loop.time() + AUDIO_HOLD_SECONDS
        if self._audio_timer is None:
            self._audio_timer = loop.call_later(AUDIO_HOLD_SECONDS, self._release_audio)

    def _release_audio(self) -> None:
        self._audio_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001
        held = self.audio_held
        while held:
            output, until = next(iter(held.items()))
            if until > now:
                self._audio_timer = loop.call_at(until, self._release_audio)
                return
            del held[output]
            try:
                output.release_audio()
            except Exception:
                log.exception("fast send failed for a site's audio")

    def report_for(self, output: SiteOutput) -> None:
        """`output`'s streams get sender reports from now on (until it has none)."""
        self._reporting[output] = None
        if self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(
                REPORT_SECONDS, self.send_reports)

    def send_reports(self) -> None:
        self._report_timer = None
        for output in list(self._reporting):
            if not output.reporters:
                del self._reporting[output]
                continue
            try:
                output.report()
                self.reports += 1
            except Exception:
                log.exception("sender report failed for a site")
        if self._reporting:
            self._report_timer = asyncio.get_running_loop().call_later(
                REPORT_SECONDS, self.send_reports)

    def wake(self, sender: FastSender) -> None:
        self._dirty[sender] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def output_ready(self, output: SiteOutput) -> None:
        self._outputs[output] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        now = time.monotonic()
        ntp = clock.current_ntp_time()
        abs_send_time = ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")
        dirty, self._dirty = self._dirty, {}
        for sender in dirty:
            try:
                sender.drain(now, ntp, abs_send_time)
            except Exception:
                log.exception("fast send failed for a site")
        outputs, self._outputs = self._outputs, {}
        for output in outputs:
            try:
                output.flush(self)
            except Exception:
                log.exception("fast send failed for a site's transport")

    def describe(self) -> dict[str, Any]:
        return {"gso": self.gso, "datagrams": self.datagrams,
                "datagrams_batched": self.datagrams_batched,
                "send_batches": self.send_batches,
                "datagrams_fallback": self.datagrams_fallback, "reports": self.reports,
                "audio_with_video": self.audio_with_video}


#: Makes a protected RTP packet: (first header byte, marker and payload type, sequence
#: number, timestamp, SSRC, what follows the 12-byte header) -> the SRTP datagram.
MakePacket = Callable[[int, int, int, int, int, bytes], bytes]


class SrtpProtect:
    """One site's SRTP protection straight through libsrtp's binding, into a buffer of its
    own: a packet's 12-byte header is packed in place and its shared tail (extensions and
    payload, the same bytes for every site of the layer) copied after it, so no plain
    packet is ever made; pylibsrtp's own `protect` (which allocates and checks per call)
    when its internals differ."""

    def __init__(self, session: Any) -> None:
        self.session = session
        #: Protects a whole plain RTP packet (retransmissions).
        self.protect: Callable[[bytes], bytes] = session.protect
        #: Makes a protected packet from its header's fields and its tail.
        self.packet: MakePacket = self._slow_packet
        try:
            from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

            srtp = session._srtp[0]
        except (ImportError, AttributeError):
            return
        buffer = bytearray(1500)
        pointer = ffi.from_buffer("char[]", buffer)
        room = len(buffer) - 144  # SRTP_MAX_TRAILER_LEN
        length = ffi.new("int *")
        srtp_protect = lib.srtp_protect
        pack_into = _HEADER.pack_into
        slow = self._slow_packet

        def packet(first: int, second: int, seq: int, timestamp: int, ssrc: int,
                   tail: bytes) -> bytes:
            end = 12 + len(tail)
            if end > room:
                return slow(first, second, seq, timestamp, ssrc, tail)
            pack_into(buffer, 0, first, second, seq, timestamp, ssrc)
            buffer[12:end] = tail
            length[0] = end
            if srtp_protect(srtp, pointer, length):
                return slow(first, second, seq, timestamp, ssrc, tail)  # raises its error
            return buffer[:length[0]]  # type: ignore[return-value]  # sendmsg takes it

        def protect(data: bytes) -> bytes:
            end = len(data)
            if end > room:
                return session.protect(data)
            buffer[0:end] = data
            length[0] = end
            if srtp_protect(srtp, pointer, length):
                return session.protect(data)
            return buffer[:length[0]]  # type: ignore[return-value]

        self._buffer, self._pointer = buffer, pointer  # the pointer lives as long as these
        self.packet, self.protect = packet, protect

    def _slow_packet(self, first: int, second: int, seq: int, timestamp: int, ssrc: int,
                     tail: bytes) -> bytes:
        return self.session.protect(_HEADER.pack(first, second, seq, timestamp, ssrc) + tail)


class SiteOutput:
    """One site's DTLS transport: its SRTP protection, and its protected packets sent
    batched once per loop turn."""

    def __init__(self, dtls: Any, hub: SendHub) -> None:
        self.dtls = dtls
        self.hub = hub
        self._out: list[bytes] = []
        self.gso = hub.gso
        self._fallback_task: asyncio.Future | None = None
        self._rtcp: list[bytes] = []
        #: The site's fast senders whose streams get sender reports.
        self.reporters: list[FastSender] = []
        #: The site's video sender (its audio rides with its frames while it has video).
        self.video: FastSender | None = None
        self._audio: list[bytes] = []
        #: The selected pair last seen, and its (socket, address, transport) or None.
        self._target: tuple[Any, tuple[Any, Any, Any] | None] | None = None
        self._srtp: SrtpProtect | None = None

    def srtp(self) -> SrtpProtect | None:
        """The site's SRTP protection while its DTLS transport is connected, else None
        (packets made then are dropped, as aiortc's sender drops them)."""
        dtls = self.dtls
        session = dtls._tx_srtp
        if session is None or dtls._state.name != "CONNECTED":
            return None
        srtp = self._srtp
        if srtp is None or srtp.session is not session:
            srtp = self._srtp = SrtpProtect(session)
        return srtp

    def queue_audio(self, data: bytes) -> None:
        """An audio packet: it leaves with the site's next video frame (at most
        `AUDIO_HOLD_SECONDS` later) while the site gets video, else now."""
        video = self.video
        if video is None or not video.running or video.track.layer == "audio" \
                or video.track.readyState != "live":
            self.queue(data)
            return
        if not self._audio:
            self.hub.hold_audio(self)
        self._audio.append(data)

    def release_audio(self) -> None:
        """The held audio goes now (no video frame came for it in time)."""
        if self._audio:
            audio, self._audio = self._audio, []
            for data in audio:
                self.queue(data)

    def queue(self, data: bytes) -> None:
        """A protected packet, to leave with this turn's batch."""
        if not self._out:
            self.hub.output_ready(self)
        self._out.append(data)

    def queue_many(self, datagrams: list[bytes]) -> None:
        if not self._out:
            self.hub.output_ready(self)
        self._out += datagrams

    def report(self) -> None:
        """One compound RTCP packet for the site: a sender report per stream (as
        aiortc's, so that the receiver reports' round trips are measured the same), then
        their SDES; it leaves with this turn's batch."""
        packets: list[Any] = []
        chunks = []
        now = time.time()
        for fast in self.reporters:
            sender = fast.sender
            ntp = sender._RTCRtpSender__ntp_timestamp
            packets.append(RtcpSrPacket(ssrc=fast.ssrc, sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp, rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
                packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
                octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF)))
            sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
            sender._RTCRtpSender__lsr_time = now
            cname = sender._RTCRtpSender__cname
            if cname is not None:
                chunks.append(RtcpSourceInfo(ssrc=fast.ssrc, items=[(1, cname.encode())]))
        if chunks:
            packets.append(RtcpSdesPacket(chunks=chunks))
        if not packets:
            return
        dtls = self.dtls
        if dtls._tx_srtp is None or dtls._state.name != "CONNECTED":
            return
        data = dtls._tx_srtp.protect_rtcp(b"".join(bytes(packet) for packet in packets))
        pacer = self.reporters[0].pacer
        if pacer is not None:
            pacer.slot(len(data), time.monotonic())
        if not self._out and not self._rtcp:
            self.hub.output_ready(self)
        self._rtcp.append(data)

    def _socket(self) -> tuple[Any, Any, Any] | None:
        """(socket, remote address, asyncio transport) of the selected pair when it is a
        plain UDP socket with nothing buffered; None for anything else."""
        connection = getattr(self.dtls.transport, "_connection", None)
        pair = connection._nominated.get(1) if connection is not None else None
        if pair is None:
            return None
        target = self._target
        if target is None or target[0] is not pair:  # looked at once per selected pair
            target = self._target = (pair, self._plain_udp(pair))
        found = target[1]
        if found is None or found[2].get_write_buffer_size():
            return None
        return found

    @staticmethod
    def _plain_udp(pair: Any) -> tuple[Any, Any, Any] | None:
        protocol = pair.protocol
        transport = getattr(protocol, "transport", None)
        if type(protocol).__name__ != "StunProtocol" or transport is None:
            return None
        sock = getattr(transport, "_sock", None)
        if sock is None or sock.type != socket.SOCK_DGRAM:
            return None
        return sock, pair.remote_addr, transport

    def flush(self, hub: SendHub) -> None:
        out, self._out = self._out, []
        if self._audio and out:  # held audio: the short last segment of this run
            hub.audio_with_video += len(self._audio)
            out += self._audio
            self._audio = []
            hub.audio_held.pop(self, None)
        if self._rtcp:
            out += self._rtcp
            self._rtcp = []
        if not out:
            return
        dtls = self.dtls
        if dtls._state.name != "CONNECTED":
            return
        target = self._socket()
        if target is None:
            hub.datagrams_fallback += len(out)
            self._fallback_task = asyncio.ensure_future(self._send_slowly(
                out, self._fallback_task))
            return
        sock, addr, transport = target
        hub.datagrams += len(out)
        sent_bytes = 0
        i, n = 0, len(out)
        while i < n:
            size = len(out[i])
            j = i + 1
            if self.gso:
                limit = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit and len(out[j]) == size:
                    j += 1
                if j < limit and len(out[j]) < size:
                    j += 1  # the last segment may be shorter
            try:
                if j - i > 1:
                    sent_bytes += sock.sendmsg(out[i:j], [(SOL_UDP, UDP_SEGMENT,
                                                           _SEGMENT.pack(size))], 0, addr)
                    hub.datagrams_batched += j - i
                else:
                    sent_bytes += sock.sendto(out[i], addr)
                hub.send_batches += 1
            except BlockingIOError:
                for data in out[i:j]:  # the socket is full: asyncio's transport buffers
                    transport.sendto(data, addr)
            except OSError as exc:
                if j - i > 1 and self.gso:
                    log.warning("UDP GSO refused (%s): one datagram per send", exc)
                    self.gso = False
                    continue  # the same run again, one by one
                log.debug("send failed: %s", exc)
            i = j
        setattr(dtls, _TX_BYTES, getattr(dtls, _TX_BYTES, 0) + sent_bytes)
        setattr(dtls, _TX_PACKETS, getattr(dtls, _TX_PACKETS, 0) + n)

    async def _send_slowly(self, out: list[bytes], before: asyncio.Future | None) -> None:
        """Protected packets through the ICE transport (what aiortc's `_send_rtp` does
        after protecting), in order after the previous batch."""
        if before is not None and not before.done():
            await asyncio.wait([before])
        dtls = self.dtls
        for data in out:
            try:
                await dtls.transport._send(bytes(data))
            except ConnectionError:
                return
            setattr(dtls, _TX_BYTES, getattr(dtls, _TX_BYTES, 0) + len(data))
            setattr(dtls, _TX_PACKETS, getattr(dtls, _TX_PACKETS, 0) + 1)


class FastSender:
    """One site's media sender (audio or video), in place of aiortc's media loop."""

    def __init__(self, sender: Any, track: SubscriberTrack, output: SiteOutput,
                 hub: SendHub, pacer: BurstPacer | None,
                 history: SentHistory | None) -> None:
        self.sender = sender
        self.track = track
        self.output = output
        self.hub = hub
        self.pacer = pacer
        self.history = history
        self.video = track.kind == "video"
        self.ssrc = sender._ssrc
        self.rtx_ssrc = sender._rtx_ssrc
        self._seq = random.randrange(32768)
        self._rtx_seq = random.randrange(32768)
        self._ts_offset = random.getrandbits(32)
        self.pt = 0
        self.rtx_pt: int | None = None
        self._ext_template: tuple[bytes, bytes, bytes] | None = None
        self._ext_cache: tuple[bytes, bytes] = (b"", b"")
        #: Packets made (protected) and waiting for their paced slot: their sequence
        #: numbers, and the datagrams.
        self._pending: deque[int] = deque()
        self._pending_data: deque[bytes] = deque()
        self._slot_taken = False
        self._wake_timer: asyncio.TimerHandle | None = None
        self.running = False

    # --- start and stop ----------------------------------------------------------------

    @classmethod
    def install(cls, sender: Any, track: SubscriberTrack, hub: SendHub,
                outputs: dict[int, SiteOutput], pacer: BurstPacer | None,
                history: SentHistory | None) -> FastSender:
        """Replace `sender`'s media loop (it starts at `sender.send`, after the answer) and
        its retransmission by this one's."""
        dtls = sender.transport
        output = outputs.get(id(dtls))
        if output is None:
            output = outputs[id(dtls)] = SiteOutput(dtls, hub)
        fast = cls(sender, track, output, hub, pacer, history)
        if track.kind == "video":
            output.video = fast
        track._as_av_packet = False  # packetized from the shared packet, never re-wrapped
        if history is not None:
            sender._RTCRtpSender__rtp_history = history
        sender._run_rtp = fast._run_rtp
        sender._run_rtcp = fast._run_rtcp
        sender._retransmit = fast._retransmit
        return fast

    async def _run_rtcp(self) -> None:
        """aiortc starts this at `send()` too: this stream's sender reports go in its
        site's compound report (`SiteOutput.report`); a BYE when the sender stops."""
        sender = self.sender
        sender._RTCRtpSender__rtcp_started.set()
        self.output.reporters.append(self)
        self.hub.report_for(self.output)
        try:
            await asyncio.Event().wait()  # until the sender stops (cancelled)
        except asyncio.CancelledError:
            pass
        finally:
            if self in self.output.reporters:
                self.output.reporters.remove(self)
        try:
            await sender._send_rtcp([RtcpByePacket(sources=[self.ssrc])])
        finally:
            sender._RTCRtpSender__rtcp_exited.set()

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        """aiortc starts this at `send()`: note the negotiated parameters, then feed from
        the track's pushes until the sender stops."""
        sender = self.sender
        sender._RTCRtpSender__rtp_started.set()
        self.pt = int(codec.payloadType or 0)
        self.rtx_pt = sender._RTCRtpSender__rtx_payload_type
        self._ext_template = self._extension_template(
            sender._RTCRtpSender__rtp_header_extensions_map, sender._RTCRtpSender__mid)
        self.running = True
        self.track.on_ready = self.wake
        self.wake()
        try:
            await asyncio.Event().wait()  # until the sender stops (cancelled)
        except asyncio.CancelledError:
            pass
        finally:
            self.running = False
            self.track.on_ready = None
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            self.track.stop()
            sender._RTCRtpSender__rtp_exited.set()

    @staticmethod
    def _extension_template(extensions_map: Any, mid: str | None) -> tuple[bytes, bytes,
                                                                         bytes]:
        """(the extension block up to the send time's value, after it) as aiortc writes
        it (one-byte header: mid, then abs-send-time), or empty when none is negotiated."""
        ids = extensions_map._HeaderExtensionsMap__ids
        elements = b""
        if mid and ids.mid and 0 < len(mid.encode()) <= 16 and ids.mid <= 14:
            value = mid.encode()
            elements += bytes([(ids.mid << 4) | (len(value) - 1)]) + value
        abs_id = ids.abs_send_time if ids.abs_send_time and ids.abs_send_time <= 14 else 0
        if abs_id:
            elements += bytes([(abs_id << 4) | 2])
        length = len(elements) + (3 if abs_id else 0)
        if not length:
            return b"", b"", b""
        padding = b"\x00" * (-length % 4)
        head = struct.pack("!HH", 0xBEDE, (length + len(padding)) // 4) + elements
        return head, padding, b"\x10" if abs_id else b""

    def _extensions(self, abs_send_time: bytes) -> bytes:
        template = self._ext_template
        if not template or not template[0]:
            return b""
        cached_time, block = self._ext_cache
        if cached_time is not abs_send_time:
            head, padding, has_time = template
            block = head + (abs_send_time if has_time else b"") + padding
            self._ext_cache = (abs_send_time, block)
        return block

    # --- sending -----------------------------------------------------------------------

    def wake(self) -> None:
        """The track has a packet (or a paced slot came): send at the end of this turn."""
        if self.running:
            self.hub.wake(self)

    def _timer_wake(self) -> None:
        self._wake_timer = None
        self.wake()

    def drain(self, now: float, ntp: int, abs_send_time: bytes) -> None:
        """Make this site's packets of what the track has (its header on the layer's
        shared tails, SRTP) and send them, as far as pacing lets video go."""
        track = self.track
        srtp = self.output.srtp()
        ext = self._extensions(abs_send_time)
        first_byte = 0x90 if ext else 0x80
        ssrc, pt = self.ssrc, self.pt
        pending = self._pending
        history = self.history
        ring = history._ring if history is not None else None
        slots = HISTORY_SLOTS - 1
        output = self.output
        pacer = self.pacer
        video = self.video
        sent = octets = 0
        timestamp = None
        rate: float | None = None
        while True:
            if pending:
                if not self._send_paced(now, rate):
                    break
                continue
            packet = track.take()
            if packet is None:
                break
            rtp = packet.rtp
            if rtp is None:  # published before a fast site came: packetize here
                rtp = packet.rtp = track.packetize(packet)
            payloads, frame_ts, pads = rtp
            # What follows the header is the same for every site with these extensions
            # (in this turn, all of them): made once per layer, not per site.
            tails = packet.tails
            if tails is None or len(tails) > 4:
                tails = packet.tails = {}
            shared = tails.get(ext)
            if shared is None:
                shared = tails[ext] = ([ext + p for p in payloads] if ext else payloads,
                                       sum(map(len, payloads)))
            timestamp = (frame_ts + self._ts_offset) & 0xFFFFFFFF
            count = len(payloads)
            if not count:
                continue
            first_seq = self._seq
            self._seq = (first_seq + count) & 0xFFFF
            sent += count
            octets += shared[1]
            if srtp is None:
                continue  # DTLS is not up (or no longer): dropped, as aiortc's are
            make = srtp.packet
            last = count - 1
            tails_list = shared[0]
            if pads is None:
                built = [make(first_byte, pt, (first_seq + i) & 0xFFFF, timestamp, ssrc,
                              tails_list[i]) for i in range(last)]
            else:
                built = [make(first_byte | pads[i], pt, (first_seq + i) & 0xFFFF, timestamp,
                              ssrc, tails_list[i]) for i in range(last)]
            last_seq = (first_seq + last) & 0xFFFF
            built.append(make(first_byte | (pads[last] if pads else 0), 0x80 | pt, last_seq,
                              timestamp, ssrc, tails_list[last]))
            if ring is not None:
                entry = (first_seq, now, payloads, timestamp, pads)
                for i in range(count):
                    ring[(first_seq + i) & slots] = entry
            if pacer is None:
                output.queue_many(built)
                self._went(last_seq)
                continue
            size = sum(map(len, built))
            if not video:
                pacer.slot(size, now)  # audio is not paced, but its bytes count
                for data in built:
                    output.queue_audio(data)
                self._went(last_seq)
                continue
            if rate is None:
                rate = pacer.rate()
            if pacer._held is None and not pacer.probe_requested \
                    and pacer.admit(size, now, rate, PACING_MIN_WAIT):
                output.queue_many(built)  # the whole frame within the burst credit
                self._went(last_seq)
                continue
            pending.extend((first_seq + i) & 0xFFFF for i in range(count))
            self._pending_data.extend(built)
        if sent:
            sender = self.sender
            sender._RTCRtpSender__ntp_timestamp = ntp
            sender._RTCRtpSender__rtp_timestamp = timestamp
            sender._RTCRtpSender__packet_count += sent
            sender._RTCRtpSender__octet_count += octets

    def _send_paced(self, now: float, rate: float | None) -> bool:
        """Send the waiting video packets one by one in their slots; False when one has
        to wait (a timer wakes this sender when its slot comes)."""
        pacer = self.pacer
        assert pacer is not None
        pending, datagrams = self._pending, self._pending_data
        while pending:
            if not self._slot_taken:
                wait = pacer.slot(len(datagrams[0]), now, rate)
                if wait > PACING_MIN_WAIT:
                    pacer.waits += 1
                    pacer.waited += wait
                    self._slot_taken = True
                    self._wake_timer = asyncio.get_running_loop().call_later(
                        wait, self._timer_wake)
                    return False
            elif self._wake_timer is not None:
                return False  # still waiting for the slot taken earlier
            self._slot_taken = False
            self._send_video(pending.popleft(), datagrams.popleft(), now)
        return True

    def _went(self, seq: int) -> None:
        """The newest packet that has left (not merely been packetized): how far behind a
        NACKed packet lies is counted from it, as the receiver sees the stream. Counted from
        the packets still waiting for their pacing slots (seconds of them behind a narrow
        link), every hole looked far behind and its repairs were held back."""
        if self.history is not None:
            self.history.newest = seq

    def _send_video(self, seq: int, data: bytes, now: float) -> None:
        """One media video packet, in its slot; the NACK probe's packet is held back and
        goes after the next one (or after `PROBE_HOLD_SECONDS`)."""
        pacer = self.pacer
        assert pacer is not None
        self._went(seq)
        queue_out = self.output.queue
        held = pacer._held
        if held is not None:
            pacer._held = None
            queue_out(data)
            pacer.probe_sent_at = now
            queue_out(held)
        elif pacer.probe_requested:
            pacer.hold(data, seq)
            asyncio.get_running_loop().call_later(PROBE_HOLD_SECONDS, self._release, data)
        else:
            queue_out(data)

    def _release(self, held: bytes) -> None:
        pacer = self.pacer
        if pacer is not None and pacer._held is held and self.running:
            pacer._held = None
            pacer.probe_sent_at = time.monotonic()
            self.output.queue(held)

    async def _retransmit(self, seq: int) -> None:
        """A NACKed packet again from the history (as RTX when negotiated); it leaves
        with this turn's batch, its bytes counted by the pacer."""
        history = self.history
        entry = history.lookup(seq) if history is not None else None
        srtp = self.output.srtp()
        if entry is None or not self.running or srtp is None:
            return
        payload, marker, timestamp, pad = entry[1]
        ext = self._extensions(self._ext_cache[0] or b"\x00\x00\x00")
        first_byte = (0x90 if ext else 0x80) | pad
        if self.rtx_pt is not None:
            plain = _HEADER.pack(first_byte, marker | self.rtx_pt, self._rtx_seq, timestamp,
                                 self.rtx_ssrc) + ext + _U16.pack(seq) + payload
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        else:
            plain = _HEADER.pack(first_byte, marker | self.pt, seq, timestamp,
                                 self.ssrc) + ext + payload
        data = srtp.protect(plain)
        if self.pacer is not None:
            self.pacer.slot(len(data), time.monotonic())
        self.output.queue(data)
