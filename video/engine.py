"""The media engine: aiortc on one long-lived asyncio loop in a daemon thread.

Every aiortc object is created and used on that loop. Callers on other threads use the
synchronous methods of `MediaEngine`, which run coroutines on the loop with
`run_coroutine_threadsafe(...).result(timeout)`. The engine never touches the database:
it reports what happens (publisher connected, site joined or left, broadcast ended with
its recording) through the `on_event` callback, which the caller must make thread-safe
(the web app puts events on a queue that a worker drains inside an app context).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import RTP_HISTORY_SIZE
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from video import forward as forward_rules
from video import hls
from video.fastsend import FastSender, SendHub, SentHistory, SiteOutput, packetizer
from video.forward import HANDBACK, Forwarder
from video.ice import etag_for, parse_sdpfrag
from video.ladder import AUDIO, LinkMonitor, ladder_for
from video.relay import (
    AUDIO_TIME_BASE,
    VIDEO_CODECS,
    VIDEO_TIME_BASE,
    BurstPacer,
    EncodedPacket,
    PacketSource,
    Recorder,
    RetransmitHistory,
    SharedAudioEncoder,
    SharedVideoEncoder,
    SubscriberTrack,
)

log = logging.getLogger(__name__)

#: Retransmissions a site may ask for, as a share of its layer's bitrate (a congested
#: link's NACK storm must not multiply what it already cannot carry).
RETRANSMIT_SHARE = 0.5
#: A lost packet is re-sent only while younger than the round trip plus this (the
#: receiver's playout delay), and never when older than `RETRANSMIT_MAX_AGE` seconds.
#: Long, because an aiortc receiver waits for every hole (512 packets: ~4 s on the top
#: layer, ~15 s on the low one); with 1.5 s the 800 kb/s bench profile froze for 4-8 s
#: after the move down (holes from the top layer left unrepaired), with 4 s it did not.
RETRANSMIT_PLAYOUT_SECONDS = 3.5
RETRANSMIT_MAX_AGE = 4.0
#: A packet is re-sent at most this many times (3 left holes after the move down on the
#: 800 kb/s bench profile: the congested link drops copies too).
RETRANSMIT_TRIES = 8
#: A re-sent packet that no later NACK confirms (an aiortc receiver NACKs only when a new
#: packet goes missing: once the loss stops, a lost copy would be a hole for good) goes
#: again after 1.5 round trips (+50 ms), at most this many times unasked ...
RETRANSMIT_UNASKED_TRIES = 3
#: ... and only while it is this close to the newest packet sent: a copy that did arrive
#: makes the next one a duplicate, and an aiortc receiver that gets a packet 100 or more
#: behind the one it waits for throws away its whole jitter buffer and starts again from
#: that old packet (then waits 512 packets: ~10 s of frozen picture).
RETRANSMIT_UNASKED_WINDOW = 75
#: Nor is any packet re-sent this far behind the newest: an aiortc receiver has given up
#: on a hole 512 packets back, and the late copy would reset its jitter buffer.
RETRANSMIT_MAX_BEHIND = 400
#: A copy that may duplicate one that arrived (not proven lost) goes only while fewer than
#: this many packets behind the newest that has left: a link keeps order, so the receiver
#: then holds nothing newer, and an aiortc receiver resets its jitter buffer only on a
#: packet 100 or more behind the one it waits for (then waits 512 packets: copies 101-109
#: behind froze the 800 kb/s profile 8-10 s after "two round trips + 100 ms" let them go).
RETRANSMIT_DUPLICATE_BEHIND = 100
#: A packet asked for again after its copy went (the copy was lost too) goes twice, a few
#: milliseconds apart, while this close to the newest packet (a second copy of a packet
#: that arrived is dropped by the receiver this near). At 5 % loss and 150 ms a third
#: loss in a row otherwise reached the far zone, where a re-send waits two round trips,
#: and the receiver stopped asking: its jitter buffer waited 512 packets (a 3-4 s freeze
#: in 3 of 5 bench runs).
RETRANSMIT_DOUBLE_WINDOW = 60
#: Unconfirmed re-sends further back than the unasked window are not re-sent but probed
#: for: one video packet goes a position late, the receiver's NACK lists what is still
#: missing (up to 128 packets back: aiortc's NACK horizon).
RETRANSMIT_PROBE_WINDOW = 120
#: A later NACK confirms a copy's arrival (by not listing it) only for packets this close
#: to the newest one sent: an aiortc receiver stops listing holes 128 packets back.
RETRANSMIT_CONFIRM_WINDOW = 100
#: A site that reconnects within this long starts on the layer it left.
REMEMBER_LAYER_SECONDS = 120.0
#: A publisher whose connection drops gets this long to come back before the broadcast ends.
PUBLISHER_GRACE_SECONDS = 15.0
CALL_TIMEOUT = 20.0


class MediaError(Exception):
    """A refused media request; `code` maps to an HTTP status in the service."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_offer(sdp: str) -> SessionDescription:
    """The parsed offer, or MediaError("bad_sdp") naming what is wrong."""
    if not sdp or not sdp.strip().startswith("v=0"):
        raise MediaError("bad_sdp", "SDP offer must start with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise MediaError("bad_sdp", f"unparsable SDP offer: {exc}") from exc
    if not any(m.kind in ("audio", "video") for m in parsed.media):
        raise MediaError("bad_sdp", "SDP offer has no audio or video section")
    for media in parsed.media:
        if media.kind in ("audio", "video") and not (media.ice and media.ice.usernameFragment
                                                     and media.dtls):
            raise MediaError("bad_sdp", f"{media.kind} section lacks ICE or DTLS attributes")
    return parsed


def ice_configuration(ice_servers: list[dict[str, Any]] | None) -> RTCConfiguration:
    """aiortc's configuration; an empty list (never None, which means Google's STUN)."""
    servers = []
    for entry in ice_servers or []:
        urls = entry.get("urls") or entry.get("url")
        if urls:
            servers.append(RTCIceServer(urls=urls, username=entry.get("username"),
                                        credential=entry.get("credential")))
    return RTCConfiguration(iceServers=servers)


def answer_as_dtls_server(pc: RTCPeerConnection) -> None:
    """Answer `a=setup:passive` to an `actpass` offer: the engine becomes the DTLS server.

    aiortc's own DTLS context offers only ECDHE-ECDSA suites. As the DTLS client it then
    cannot reach a server holding an RSA certificate (GStreamer's webrtcbin, several
    hardware encoders): "no shared cipher". As the server it picks an ECDSA suite for its
    own ECDSA certificate, and the peer's certificate, RSA or ECDSA, is only checked
    against the SDP fingerprint. An offer that is itself `passive` keeps the engine the
    client; an `active` one already made it the server.
    """
    offer = SessionDescription.parse(pc.remoteDescription.sdp)
    if any(m.dtls is not None and m.dtls.role != "auto" for m in offer.media):
        return  # the offerer chose its role: aiortc answers the other one
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None and transport._role == "auto":
            transport._set_role("server")


def remote_ice_ufrag(pc: RTCPeerConnection) -> str | None:
    description = pc.remoteDescription
    if description is None:
        return None
    parsed = SessionDescription.parse(description.sdp)
    return next((m.ice.usernameFragment for m in parsed.media
                 if m.ice and m.ice.usernameFragment), None)


def local_ice_ufrag(pc: RTCPeerConnection) -> str | None:
    description = pc.localDescription
    if description is None:
        return None
    parsed = SessionDescription.parse(description.sdp)
    return next((m.ice.usernameFragment for m in parsed.media
                 if m.ice and m.ice.usernameFragment), None)


class Subscriber:
    """One site (or viewer) watching a broadcast."""

    def __init__(self, resource_id: str, pc: RTCPeerConnection, info: dict[str, Any],
                 codec: str) -> None:
        self.resource_id = resource_id
        self.pc = pc
        self.info = info
        self.codec = codec
        self.tracks: list[Any] = []
        self.joined_at = time.time()
        self.requested_at = time.monotonic()
        self.connected = False
        self.monitor: LinkMonitor | None = None
        self.pacer: BurstPacer | None = None
        self.video_track: SubscriberTrack | None = None
        self.retransmits = 0
        self.retransmits_deferred = 0
        self.retransmits_skipped = 0
        #: Of those skipped: re-sent `RETRANSMIT_TRIES` times already.
        self.retransmits_exhausted = 0
        self.retransmits_repeated = 0
        self._rtx_sent: dict[int, float] = {}
        self._rtx_tries: dict[int, int] = {}
        self._rtx_backlog: dict[int, None] = {}
        self._rtx_task: asyncio.Task | None = None
        #: Set by a NACK: the retransmission task, asleep until a copy falls due, wakes
        #: for it (it once slept up to 0.3 s on a fresh NACK, whose packet was then far
        #: behind when re-sent, and a lost copy could no longer be asked for again).
        self._rtx_wake = asyncio.Event()
        #: A NACKed packet was given up (too old, or re-sent too often): ask for a keyframe.
        self.gave_up = False
        #: Re-sent packets not yet confirmed by a later NACK: seq -> unasked re-sends.
        self._rtx_unconfirmed: dict[int, int] = {}
        self.retransmits_unasked = 0
        #: Asked again for a copy sent lately, far behind: not re-sent (a duplicate there
        #: would reset an aiortc receiver's jitter buffer).
        self.retransmits_held = 0
        #: Second copies of packets whose first copy was lost (`RETRANSMIT_DOUBLE_WINDOW`).
        self.retransmits_doubled = 0
        self._rtx_asked_again: set[int] = set()
        #: Re-sent packets a NACK still listed although it knew of a packet that left
        #: after the copy: on a link that keeps order the copy was lost too, whatever the
        #: round trip (`queue_retransmits`). They go again at once, far behind or not.
        self._rtx_copy_lost: set[int] = set()
        #: seq -> the newest packet that had left when its last copy went.
        self._rtx_newest: dict[int, int] = {}
        #: Copies queued unasked (no NACK listed them since their last copy went), until
        #: they go: they may duplicate a copy that arrived, so they go only while near the
        #: newest packet (`RETRANSMIT_UNASKED_WINDOW`) when they leave, not only when
        #: queued (one that waits for the budget can be far behind by then).
        self._rtx_unasked_queued: set[int] = set()
        #: Unasked copies that fell too far behind while queued (probed for instead).
        self.retransmits_unasked_late = 0
        self._last_probe = 0.0
        self._rtx_tokens = 0.0
        self._rtx_refill_at = time.monotonic()
        #: The site's senders on the fast send path (`video.fastsend`), if it is on.
        self.fast_senders: list[FastSender] = []

    def describe(self) -> dict[str, Any]:
        video = next((t for t in self.tracks if t.kind == "video"), None)
        first = getattr(video, "first_packet_at", None)
        link: dict[str, Any] = self.monitor.describe() if self.monitor else {}
        if isinstance(video, SubscriberTrack):
            link["video_packets_sent"] = video.packets_sent
            link["layer"] = video.layer
            link["layer_target"] = video.pending_layer or video.layer
        elif self.monitor is not None:
            link["layer"] = "audio" if video is None else "high"  # audio-only offer; baseline
        return {
            "resource_id": self.resource_id, "codec": self.codec,
            "state": self.pc.connectionState, "joined_at": self.joined_at,
            "first_frame_ms": round((first - self.requested_at) * 1000) if first else None,
            "packets_dropped": sum(getattr(t, "packets_dropped", 0) for t in self.tracks),
            "retransmits": self.retransmits, "retransmits_deferred": self.retransmits_deferred,
            "retransmits_skipped": self.retransmits_skipped,
            "retransmits_exhausted": self.retransmits_exhausted,
            "retransmits_repeated": self.retransmits_repeated,
            "retransmits_unasked": self.retransmits_unasked,
            "retransmits_unasked_late": self.retransmits_unasked_late,
            "retransmits_held": self.retransmits_held,
            "retransmits_doubled": self.retransmits_doubled,
            "nack_probes": self.pacer.probes if self.pacer else 0,
            "paced_ms": round(self.pacer.waited * 1000) if self.pacer else 0,
            **link,
            **self.info,
        }

    def worth_retransmitting(self, sender: RTCRtpSender, lost: list[int],
                             now: float) -> tuple[list[int], list[int], float]:
        """Of the NACKed packets: those to re-send now, those to re-send later, and when.

        Dropped: no longer in aiortc's history, older than the round trip plus
        `RETRANSMIT_PLAYOUT_SECONDS`, or re-sent `RETRANSMIT_TRIES` times already. Later:
        re-sent less than a round trip ago (the request may predate the copy's arrival;
        if the copy was lost too, it goes again once the round trip has passed: an aiortc
        receiver asks again only when another packet goes missing)."""
        history = getattr(sender, "_RTCRtpSender__rtp_history", None)
        timed = history if isinstance(history, RetransmitHistory) else None
        latest = getattr(sender, "_RTCRtpSender__rtp_timestamp", None)
        rtt = getattr(sender, "_RTCRtpSender__rtt", None) or 0.05
        max_age = min(RETRANSMIT_MAX_AGE, rtt + RETRANSMIT_PLAYOUT_SECONDS)
        again_after = max(0.02, 1.2 * rtt)
        for seq in [s for s, at in self._rtx_sent.items() if now - at > RETRANSMIT_MAX_AGE + 1]:
            del self._rtx_sent[seq]
            self._rtx_tries.pop(seq, None)
            self._rtx_copy_lost.discard(seq)
            self._rtx_newest.pop(seq, None)
            self._rtx_unasked_queued.discard(seq)
        ready: list[int] = []
        later: list[int] = []
        wake = 1.0
        newest = timed.newest if timed is not None and timed.newest is not None else 0
        for seq in lost:
            behind = (newest - seq) % 65536 if timed is not None else 0
            if timed is not None:
                entry = timed.lookup(seq)
                if entry is None or now - entry[0] > max_age \
                        or behind >= RETRANSMIT_MAX_BEHIND:
                    self.retransmits_skipped += 1  # too old: the receiver has moved on
                    self.gave_up = True
                    self._rtx_unconfirmed.pop(seq, None)
                    continue
            elif history is not None and latest is not None:
                packet = history.get(seq % RTP_HISTORY_SIZE)
                if packet is None or packet.sequence_number != seq:
                    self.retransmits_skipped += 1  # no longer in aiortc's history
                    continue
                age = ((latest - packet.timestamp) % (1 << 32)) / 90000
                if age > max_age:
                    self.retransmits_skipped += 1
                    continue
            if self._rtx_tries.get(seq, 0) >= RETRANSMIT_TRIES:
                self.retransmits_skipped += 1
                self.retransmits_exhausted += 1
                self.gave_up = True
                self._rtx_unconfirmed.pop(seq, None)
                continue
            since = now - self._rtx_sent.get(seq, -1e9)
            far = behind >= RETRANSMIT_UNASKED_WINDOW  # (0 without a timed history)
            if far and seq in self._rtx_unasked_queued:
                # Queued unasked near the newest, it waited until it was far behind: its
                # last copy may have arrived, and a duplicate this far back resets an
                # aiortc receiver's jitter buffer. It stays unconfirmed: a probe asks.
                self._rtx_unasked_queued.discard(seq)
                self.retransmits_unasked_late += 1
                continue
            duplicate_harms = seq in self._rtx_sent and behind >= RETRANSMIT_DUPLICATE_BEHIND
            if far and seq not in self._rtx_copy_lost \
                    and (since < 2 * rtt + 0.1 or duplicate_harms):
                # Re-sent lately and far behind: the NACK may predate the copy's arrival,
                # and a duplicate this far back resets an aiortc receiver's jitter buffer.
                # Only a NACK well after the copy (while a duplicate could do no harm), or
                # one that knows of a packet that left after it (`_nack_knows`: the copy
                # was lost too), sends it again; until one comes it stays unconfirmed, so
                # that a probe asks the receiver about it (an aiortc receiver NACKs again
                # only when a new packet goes missing: a packet dropped from every list
                # here was a hole for good).
                self.retransmits_held += 1
                self._rtx_unconfirmed.setdefault(seq, 0)
                continue
            if since < again_after:
                later.append(seq)
                wake = min(wake, again_after - since)
                continue
            ready.append(seq)
        return ready, later, wake

    def _worth_doubling(self, sender: RTCRtpSender, send: list[int]) -> list[int]:
        """Of the packets about to be re-sent: those a NACK asked for again after a copy
        went (it was lost too) and near the newest packet, as far as the retransmission
        budget allows a second copy each."""
        history = getattr(sender, "_RTCRtpSender__rtp_history", None)
        asked, self._rtx_asked_again = self._rtx_asked_again, set()
        if not isinstance(history, RetransmitHistory) or history.newest is None:
            return []
        newest = history.newest
        self._rtx_asked_again = {seq for seq in asked if seq in self._rtx_backlog}
        again = [seq for seq in send if seq in asked
                 and (newest - seq) % 65536 < RETRANSMIT_DOUBLE_WINDOW]
        again = again[:max(0, int(self._rtx_tokens))]
        self._rtx_tokens -= len(again)
        return again

    def retransmitted(self, lost: list[int], now: float) -> None:
        for seq in lost:
            self._rtx_copy_lost.discard(seq)
            self._rtx_unasked_queued.discard(seq)
            self._rtx_sent[seq] = now
            self._rtx_tries[seq] = self._rtx_tries.get(seq, 0) + 1

    def queue_retransmits(self, sender: RTCRtpSender, lost: list[int],
                          bitrate_kbps: Callable[[], float]) -> None:
        """A NACK: the packets join this site's retransmission queue, which is re-sent
        oldest first within a budget of `RETRANSMIT_SHARE` of the layer's bitrate
        (token bucket of one second). What the budget cannot send now waits for it, as
        long as it stays worth sending: an aiortc receiver NACKs a packet again only when
        a new one goes missing, so a packet refused once would leave a hole for good."""
        if self.video_track is not None and self.video_track.layer == AUDIO:
            # The video is paused for this link: repairing it would only crowd the audio.
            self._forget_repairs()
            return
        knows = self._nack_knows(sender, lost)  # the probe's late packet included
        if self.pacer is not None and self.pacer.probe_seq is not None:
            now, rtt = time.monotonic(), getattr(sender, "_RTCRtpSender__rtt", None) or 0.05
            pacer = self.pacer  # the late packet's own NACK: it came right after
            lost = [seq for seq in lost if not pacer.probe_in_flight(seq, now, rtt)]
        self._confirm(sender, set(lost), time.monotonic())
        for seq in lost:
            if seq in self._rtx_sent:
                self.retransmits_repeated += 1
                self._rtx_asked_again.add(seq)
                went_with = self._rtx_newest.get(seq)
                if knows is not None and went_with is not None \
                        and 0 < (knows - went_with) % 65536 < 32768:
                    self._rtx_copy_lost.add(seq)
            self._rtx_unconfirmed.pop(seq, None)
            self._rtx_unasked_queued.discard(seq)  # asked for: a hole the receiver has
            self._rtx_backlog.setdefault(seq, None)
        self._rtx_wake.set()
        if self._rtx_task is None or self._rtx_task.done():
            self._rtx_task = asyncio.ensure_future(self._drain_retransmits(sender, bitrate_kbps))

    @staticmethod
    def _nack_knows(sender: RTCRtpSender, listed: list[int]) -> int | None:
        """The newest packet a NACK lists (None without a timed history).

        A receiver lists a hole only once a later packet has arrived. If that hole left
        after a copy did (it is newer than the newest packet that had left when the copy
        went: the history's `newest` counts packets that have left, on both send paths),
        the copy reached the receiver first on a link that keeps order. So a copy still
        listed then was lost, not late: no round-trip estimate needed (at 800 kb/s the
        queue doubles the real one). Sequence numbers, not times: on the fast path a
        packet is made long before it leaves behind a narrow link."""
        history = getattr(sender, "_RTCRtpSender__rtp_history", None)
        if not isinstance(history, RetransmitHistory) or history.newest is None or not listed:
            return None
        newest = history.newest
        return min(listed, key=lambda seq: (newest - seq) % 65536)

    def _forget_repairs(self) -> None:
        """No more repairs for now (the site is on the audio layer, or gone): the queued,
        the unconfirmed and those proven lost are dropped."""
        self._rtx_backlog.clear()
        self._rtx_unconfirmed.clear()
        self._rtx_copy_lost.clear()
        self._rtx_unasked_queued.clear()

    async def _nap(self, seconds: float) -> None:
        """Sleep until a copy falls due, or until a NACK brings new packets."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._rtx_wake.wait(), max(0.005, seconds))
        self._rtx_wake.clear()

    def _confirm(self, sender: RTCRtpSender, listed: set[int], now: float) -> None:
        """A NACK lists every hole the receiver still has near its newest packet: re-sent
        packets it does not list (sent more than a round trip before it) have arrived."""
        history = getattr(sender, "_RTCRtpSender__rtp_history", None)
        if not isinstance(history, RetransmitHistory) or history.newest is None:
            return
        newest = history.newest
        rtt = getattr(sender, "_RTCRtpSender__rtt", None) or 0.05
        for seq in list(self._rtx_unconfirmed):
            if seq not in listed and now - self._rtx_sent.get(seq, now) > rtt \
                    and (newest - seq) % 65536 < RETRANSMIT_CONFIRM_WINDOW:
                del self._rtx_unconfirmed[seq]

    def _due_unasked(self, sender: RTCRtpSender, now: float) -> float | None:
        """Re-sent packets no NACK confirmed within 1.5 round trips go again (into the
        backlog) while near the newest packet; returns when the next one falls due, or None
        when none is waiting."""
        rtt = getattr(sender, "_RTCRtpSender__rtt", None) or 0.05
        after = 1.5 * rtt + 0.05
        history = getattr(sender, "_RTCRtpSender__rtp_history", None)
        newest = history.newest if isinstance(history, RetransmitHistory) else None
        due_at = None
        for seq, unasked in list(self._rtx_unconfirmed.items()):
            sent = self._rtx_sent.get(seq)
            behind = (newest - seq) % 65536 if newest is not None else None
            if sent is None or unasked >= RETRANSMIT_UNASKED_TRIES or behind is None \
                    or behind >= RETRANSMIT_PROBE_WINDOW:
                del self._rtx_unconfirmed[seq]
            elif behind >= RETRANSMIT_UNASKED_WINDOW:
                # Too far back to re-send unasked: ask the receiver what it still misses.
                if self.pacer is None:
                    del self._rtx_unconfirmed[seq]
                    continue
                # The probe's packet leaves after the copy, so its NACK settles whether the
                # copy arrived (`_nack_knows`): no need to wait round trips for it, only
                # one probe per round trip. (Waiting 2 RTT + 100 ms, a packet held back
                # when ~100 behind left the window before its probe: a hole for good.)
                ready_at = max(sent + 0.005, self._last_probe + rtt)
                if now >= ready_at:
                    self._last_probe = now
                    self.pacer.probe_requested = True
                    ready_at = now + rtt
                due_at = min(due_at or 1e18, ready_at)
            elif now - sent >= after:
                self._rtx_unconfirmed[seq] = unasked + 1
                self.retransmits_unasked += 1
                self._rtx_backlog.setdefault(seq, None)
                self._rtx_unasked_queued.add(seq)
            else:
                due_at = min(due_at or 1e18, sent + after)
        return due_at

    async def _drain_retransmits(self, sender: RTCRtpSender,
                                 bitrate_kbps: Callable[[], float]) -> None:
        first = True
        timed = isinstance(getattr(sender, "_RTCRtpSender__rtp_history", None),
                           RetransmitHistory)
        try:
            while self._rtx_backlog or self._rtx_unconfirmed:
                if self.video_track is not None and self.video_track.layer == AUDIO:
                    self._forget_repairs()  # moved to audio only: no more video repairs
                    break
                now = time.monotonic()
                due_at = self._due_unasked(sender, now)
                if not self._rtx_backlog:
                    if due_at is None:
                        break
                    await self._nap(due_at - now)
                    continue
                ready, later, wake = self.worth_retransmitting(
                    sender, list(self._rtx_backlog), now)
                rate = max(25.0, RETRANSMIT_SHARE * bitrate_kbps() * 1000 / 8 / 1100)
                self._rtx_tokens = min(rate, self._rtx_tokens
                                       + (now - self._rtx_refill_at) * rate)
                self._rtx_refill_at = now
                allowed = min(len(ready), int(self._rtx_tokens))
                self._rtx_tokens -= allowed
                send, rest = ready[:allowed], ready[allowed:]
                self._rtx_backlog = dict.fromkeys([*rest, *later])
                if first:
                    self.retransmits_deferred += len(rest)
                    first = False
                again = self._worth_doubling(sender, send)
                self.retransmitted(send, now)
                self.retransmits += len(send)
                history = getattr(sender, "_RTCRtpSender__rtp_history", None)
                for seq in send:
                    if isinstance(history, RetransmitHistory):
                        history.restore(seq, RTP_HISTORY_SIZE)
                        if history.newest is not None:  # what had left when it went
                            self._rtx_newest[seq] = history.newest
                    if timed:
                        self._rtx_unconfirmed.setdefault(seq, 0)
                    await sender._retransmit(seq)
                for seq in again:
                    self.retransmits_doubled += 1
                    await sender._retransmit(seq)
                if self.gave_up:
                    # A hole that will not be repaired: the site's decoder needs a fresh
                    # start, a keyframe of its layer (rate-limited by that layer's encoder).
                    self.gave_up = False
                    if self.video_track is not None:
                        self.video_track.request_keyframe()
                if rest:
                    await asyncio.sleep(max(0.005, 1 / rate))
                elif later:
                    await self._nap(wake)
        except (ConnectionError, asyncio.CancelledError):
            self._forget_repairs()

    def close(self) -> None:
        if self._rtx_task is not None:
            self._rtx_task.cancel()


class Broadcast:
    """One occurrence on air: the trainer's connection, the shared encoders, the sites."""

    def __init__(self, engine: MediaEngine, occurrence_id: int, options: dict[str, Any]) -> None:
        self.engine = engine
        self.occurrence_id = occurrence_id
        self.options = options
        self.publisher_id: str | None = None
        self.publisher_pc: RTCPeerConnection | None = None
        self.publisher_user: Any = options.get("user_id")
        self.subscribers: dict[str, Subscriber] = {}
        self.started_at = time.time()
        self.t0 = time.monotonic()
        self.mode = options.get("relay", engine.relay_mode)
        self.bitrate_kbps = int(options.get("bitrate_kbps") or 1200)
        self.height = int(options.get("height") or 480)
        #: The encoding ladder; `ladder: false` (bench baseline) keeps one layer.
        layers = ladder_for(self.height, self.bitrate_kbps)
        if options.get("ladder") is False:
            layers = layers[:1]
        self.layers = {layer.name: layer for layer in layers}
        self.layer_names = [layer.name for layer in layers]
        #: The layer each site (or member) was on when it left, and when.
        self.site_layers: dict[str, tuple[str, float]] = {}
        # Keyed by (codec, layer name): one encoder each, started when someone watches.
        self.video_encoders: dict[tuple[str, str], SharedVideoEncoder] = {}
        self.video_sources: dict[tuple[str, str], PacketSource] = {}
        self.audio_encoder = SharedAudioEncoder()
        self.audio_source = PacketSource("audio")
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"encode-{occurrence_id}")
        self.recorder: Recorder | None = None
        self._told_failure = False
        self.record_path: str | None = options.get("record_path")
        if self.record_path:
            os.makedirs(os.path.dirname(self.record_path) or ".", exist_ok=True)
            self.recorder = Recorder(self.record_path, self.audio_encoder.extradata)
        self.tasks: set[asyncio.Task] = set()
        self.grace_task: asyncio.Task | None = None
        self.ended = False
        self.frames_in = 0
        self.frames_encoded = 0
        self._fps_window: list[float] = []
        self.last_pts = -1
        # Baseline mode (bench): aiortc's MediaRelay, one encoder per site.
        self.media_relay: MediaRelay | None = None
        self.relay_sources: dict[str, Any] = {}
        self._video_pump_track: Any = None
        # HLS for members watching alone: one more consumer of the decoded frames.
        self.hls = hls.packager_for(options)
        #: Forward mode (video.forward): the publisher's own frames to the top layer.
        self.forward: Forwarder | None = None
        if self.mode == "encoded":
            self.forward = Forwarder(
                options.get("forward") or engine.forward_setting, self.height,
                self.bitrate_kbps, on_frame=self.on_forwarded, needs_decode=self.needs_decode)
        self.frames_forwarded = 0
        #: The sites' send path (`video.fastsend`): packetized once per layer, batched
        #: datagrams; on unless `YUANJIAO_FAST_SEND=0` or a broadcast's `fast_send: false`
        #: (which keeps aiortc's own sender loop for every site; the option wins).
        self.send_hub: SendHub | None = None
        if self.mode == "encoded" and options.get("fast_send", engine.fast_send_setting) is True:
            self.send_hub = SendHub()
            self.audio_source.packetize = packetizer("audio/opus")
        self.ensure_video_source("vp8")

    # --- sources -----------------------------------------------------------------------

    def ensure_video_source(self, codec: str, layer: str = "high") -> PacketSource:
        key = (codec, layer)
        if key not in self.video_sources:
            spec = self.layers[layer]
            encoder = SharedVideoEncoder(codec, bitrate_kbps=spec.bitrate_kbps,
                                         height=spec.height or self.height, layer=layer)
            self.video_encoders[key] = encoder
            source = self.video_sources[key] = PacketSource(
                "video", lambda: self.request_keyframe(key), layer=layer)
            if self.send_hub is not None:
                source.packetize = packetizer(VIDEO_CODECS[codec][1])
        return self.video_sources[key]

    def request_keyframe(self, key: tuple[str, str]) -> None:
        """A site's keyframe request: the publisher's (by PLI) while its frames are
        forwarded to this source, else this source's encoder (both rate-limited)."""
        if self.forward is not None and self.forward.feeds(key):
            self.forward.request_keyframe()
        if self.forward is None or not self.forward.replaces(key):
            self.video_encoders[key].request_keyframe()

    # --- forward mode ------------------------------------------------------------------

    def needs_decode(self) -> bool:
        """Whether anything wants the publisher's decoded pictures now: the HLS packager,
        a watched layer or codec the forwarded frames do not stand for, the recording when
        it is not of the forwarded codec, the way back to encoding."""
        forward = self.forward
        if forward is None or forward.state == HANDBACK or self.hls is not None:
            return True
        if self.recorder is not None and self.recorder.codec not in (None, forward.codec):
            return True
        return any(source.watched and not forward.replaces(key)
                   for key, source in self.video_sources.items())

    def _next_pts(self) -> int:
        """The next video timestamp: the broadcast clock, strictly growing across the
        forwarded and the encoded frames (a site switching layers sees them grow)."""
        pts = max(self._pts(90000), self.last_pts + 1)
        self.last_pts = pts
        return pts

    def on_forwarded(self, codec: str, data: bytes, is_keyframe: bool) -> None:
        """One of the publisher's encoded frames, forwarded to the top layer's sites, its
        GOP cache and the recording (on the loop, from the receiver's tap)."""
        source = self.ensure_video_source(codec, "high")
        if source.gop_frames != forward_rules.GOP_FRAMES:
            source.gop_seconds = forward_rules.GOP_SECONDS
            source.gop_frames = forward_rules.GOP_FRAMES
        packet = EncodedPacket(data, self._next_pts(), VIDEO_TIME_BASE, is_keyframe)
        source.take_switches([packet])
        source.publish(packet)
        if self.recorder is not None and self.forward is not None:
            self.recorder.write_video(packet, self.forward.width, self.forward.height, codec)
            self._tell_recording_failure()
        self.frames_forwarded += 1
        self._tick_fps()

    def _tell_recording_failure(self) -> None:
        """Once per recording: the pages show that it stopped; the broadcast goes on."""
        if self.recorder is not None and self.recorder.failed and not self._told_failure:
            self._told_failure = True
            self.engine._emit({"type": "recording_failed", "occurrence_id": self.occurrence_id,
                               "error": self.recorder.error})

    def _tick_fps(self) -> None:
        now = time.monotonic()
        self._fps_window.append(now)
        while self._fps_window and self._fps_window[0] < now - 2:
            self._fps_window.pop(0)

    # --- each site's layer -------------------------------------------------------------

    def on_receiver_report(self, subscriber: Subscriber, kind: str, fraction_lost: int,
                           jitter_ms: float | None, rtt_ms: float | None) -> None:
        """A report block about one of the site's streams: the stream it is on feeds its
        link monitor (video while it gets video, audio on the audio-only layer)."""
        monitor = subscriber.monitor
        track = subscriber.video_track
        if monitor is None or self.ended:
            return
        on_video = track is not None and track.layer != AUDIO
        if (kind == "video") != on_video:
            return
        now = time.monotonic()
        monitor.report(fraction_lost, now, jitter_ms=jitter_ms, rtt_ms=rtt_ms)
        target = monitor.target(now)
        if target is not None:
            self.move_site(subscriber, target, now)

    def site_bitrate_kbps(self, subscriber: Subscriber) -> float:
        track = subscriber.video_track
        layer = self.layers.get(track.layer if track is not None else AUDIO)
        return float(layer.bitrate_kbps) if layer is not None and layer.height else 64.0

    def move_site(self, subscriber: Subscriber, layer: str, now: float) -> None:
        """Send a site to a layer: at that layer's next keyframe, or no video at all."""
        track = subscriber.video_track
        if track is None or subscriber.monitor is None:
            return
        log.info("site %s: layer %s -> %s (loss %s %%)", subscriber.resource_id,
                 subscriber.monitor.layer, layer, subscriber.monitor.loss)
        subscriber.monitor.move(layer, now)
        track.switch_to(None if layer == AUDIO else
                        self.ensure_video_source(subscriber.codec, layer))

    @staticmethod
    def _site_key(info: dict[str, Any]) -> str | None:
        for field in ("site_id", "member_id", "user_id"):
            if info.get(field) is not None:
                return f"{field}:{info[field]}"
        return None

    def start_layer(self, info: dict[str, Any]) -> str:
        """The top layer; or, for a site that left a lower one moments ago (a reconnect on
        the same poor link), that layer (the lowest video one rather than audio only)."""
        key = self._site_key(info)
        remembered = self.site_layers.get(key) if key else None
        if remembered is None or time.monotonic() - remembered[1] > REMEMBER_LAYER_SECONDS:
            return self.layer_names[0]
        video = [name for name in self.layer_names if name != AUDIO]
        return remembered[0] if remembered[0] in video else video[-1]

    def remember_layer(self, subscriber: Subscriber) -> None:
        key = self._site_key(subscriber.info)
        track = subscriber.video_track
        if key is None or track is None or subscriber.monitor is None \
                or subscriber.monitor.pinned is not None:
            return
        if track.layer == self.layer_names[0]:
            self.site_layers.pop(key, None)
        else:
            self.site_layers[key] = (track.layer, time.monotonic())

    def pin_site(self, subscriber: Subscriber, layer: str | None) -> None:
        """An organizer fixes a site's layer (None: back to automatic)."""
        if subscriber.monitor is None:
            return
        subscriber.monitor.pin(layer)
        if layer is not None:
            self.move_site(subscriber, layer, time.monotonic())

    # --- publisher ---------------------------------------------------------------------

    def attach_publisher(self, resource_id: str, pc: RTCPeerConnection) -> None:
        self.publisher_id = resource_id
        self.publisher_pc = pc
        if self.grace_task is not None:
            self.grace_task.cancel()
            self.grace_task = None

    def on_publisher_track(self, track: Any, resource_id: str) -> None:
        if self.mode == "mediarelay":
            if self.media_relay is None:
                self.media_relay = MediaRelay()
            self.relay_sources[track.kind] = track
            return
        if track.kind == "video" and self.forward is not None and self.publisher_pc:
            transceiver = next((t for t in self.publisher_pc.getTransceivers()
                                if t.receiver.track is track), None)
            if transceiver is not None:
                self.forward.install(transceiver.receiver, transceiver._codecs)
        pump = self._pump_video if track.kind == "video" else self._pump_audio
        task = asyncio.ensure_future(pump(track, resource_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _pts(self, clock_rate: int) -> int:
        return int((time.monotonic() - self.t0) * clock_rate)

    async def _pump_video(self, track: Any, resource_id: str) -> None:
        """Decoded trainer frames → one encode per codec in use → every site."""
        loop = asyncio.get_running_loop()
        while not self.ended and self.publisher_id == resource_id:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            # When encoding falls behind by more than a few frames, skip to the newest:
            # sites get a lower frame rate rather than a growing delay. (A small backlog
            # is normal: the jitter buffer releases frames in bursts.)
            queue = getattr(track, "_queue", None)
            while queue is not None and queue.qsize() > 3:
                newer = queue.get_nowait()
                if newer is None:
                    break
                frame = newer
            self.frames_in += 1
            pts = max(self._pts(90000), self.last_pts + 1)
            self.last_pts = pts
            # Every layer someone watches (or waits for), and VP8's top layer always (the
            # recording, and a joining site's GOP cache). Encode all, then let waiting
            # sites switch at a keyframe, then hand the packets out.
            outputs = []
            forward = self.forward
            forwarding = forward is not None and forward.state != "encode"
            # The recording's codec (VP8 unless it began with forwarded H.264) is encoded
            # even when nobody watches it, unless forwarded frames stand for it.
            recorded = ((self.recorder.codec if self.recorder is not None
                         and self.recorder.codec else "vp8"), "high")
            for key, source in list(self.video_sources.items()):
                encoder = self.video_encoders[key]
                handing_back = forward is not None and forward.state == HANDBACK \
                    and forward.feeds(key)
                if (forward is not None and forward.replaces(key)) or not (
                        source.watched or handing_back
                        or (key == recorded and not forwarding)):
                    encoder.idle = True
                    continue
                try:
                    packets = await loop.run_in_executor(self.executor, encoder.encode,
                                                         frame, pts)
                except Exception:
                    log.exception("video encode failed (occurrence %s)", self.occurrence_id)
                    continue
                outputs.append((key, source, encoder, packets))
            if forward is not None:
                # Forwarded frames went out meanwhile: these follow them in time.
                stamp = max(pts, self.last_pts + 1)
                self.last_pts = stamp
                for _key, _source, _encoder, packets in outputs:
                    for packet in packets:
                        packet.pts = stamp
                kept = []
                for entry in outputs:
                    if forward.feeds(entry[0]):  # handing back: from the encoder's keyframe
                        if not any(p.is_keyframe for p in entry[3]):
                            continue
                        forward.handed_back()
                    kept.append(entry)
                outputs = kept
            for _key, source, _encoder, packets in outputs:
                source.take_switches(packets)
            for key, source, encoder, packets in outputs:
                for packet in packets:
                    source.publish(packet)
                    if key == recorded and self.recorder is not None:
                        self.recorder.write_video(packet, encoder.width, encoder.height,
                                                  key[0])
            self._tell_recording_failure()
            self.frames_encoded += 1
            if self.hls is not None:  # after the encoders: the frame is the packager's now
                self.hls.push_video(frame)
            if not forwarding:
                self._tick_fps()

    async def _pump_audio(self, track: Any, resource_id: str) -> None:
        """Decoded trainer audio → one Opus encode → every site."""
        while not self.ended and self.publisher_id == resource_id:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            try:
                packets = self.audio_encoder.encode(frame, self._pts(48000))
            except Exception:
                log.exception("audio encode failed (occurrence %s)", self.occurrence_id)
                continue
            if self.hls is not None:
                self.hls.push_audio(frame)
            for packet in packets:
                self.audio_source.publish(packet)
                if self.recorder is not None:
                    if self.recorder._audio_extradata is None:
                        self.recorder._audio_extradata = self.audio_encoder.extradata
                    self.recorder.write_audio(packet)

    # --- stats and end -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        vp8 = self.video_encoders.get(("vp8", "high"))
        elapsed = max(0.001, time.monotonic() - self.t0)
        window = self._fps_window
        fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and \
            window[-1] > window[0] else 0.0
        top = [s for (_, layer), s in self.video_sources.items()
               if layer == self.layer_names[0] and s.packets]
        video_bytes = sum(s.bytes for s in top)
        forward = self.forward.describe() if self.forward is not None else None
        forwarding = forward is not None and forward["state"] == "forward"
        return {
            "state": "live",
            "occurrence_id": self.occurrence_id,
            "mode": "forward" if forwarding else self.mode,
            "forward": forward,
            "frames_forwarded": self.frames_forwarded,
            "publisher_connected": self.publisher_pc is not None
            and self.publisher_pc.connectionState == "connected",
            "started_at": self.started_at,
            "subscribers": len(self.subscribers),
            "sites": [s.describe() for s in self.subscribers.values()],
            "fps": round(fps, 1),
            "frames_in": self.frames_in,
            "width": forward["width"] if forward and forwarding else vp8.width if vp8 else 0,
            "height": forward["height"] if forward and forwarding else vp8.height if vp8 else 0,
            "target_bitrate_kbps": self.bitrate_kbps,
            "bitrate_kbps": round(video_bytes * 8 / elapsed / 1000 / max(1, len(top)), 1),
            "keyframes": sum(s.keyframes for s in self.video_sources.values()),
            "send_path": {"fast": True, **self.send_hub.describe()}
            if self.send_hub is not None else {"fast": False},
            "codecs": sorted({c for (c, _), s in self.video_sources.items()
                              if s.watched or c == "vp8"}),
            "layers": self.layer_stats(),
            "recording": self.record_path,
            # "recording", "failed" (the broadcast goes on without), or None.
            "recording_state": None if self.recorder is None else (
                "failed" if self.recorder.failed else "recording"),
            "recording_error": self.recorder.error if self.recorder is not None else None,
        }

    def layer_stats(self) -> list[dict[str, Any]]:
        """Per layer: its size and bitrate, whether it is encoded, its keyframes and sites."""
        out = []
        for name in self.layer_names:
            spec = self.layers[name]
            entry: dict[str, Any] = {"name": name, "height": spec.height,
                                     "bitrate_kbps": spec.bitrate_kbps}
            if spec.height is None:
                entry["sites"] = sum(1 for s in self.subscribers.values()
                                     if s.video_track is not None
                                     and s.video_track.layer == AUDIO)
            else:
                sources = [(k, s) for k, s in self.video_sources.items() if k[1] == name]
                encoders = [self.video_encoders[k] for k, _ in sources]
                entry.update({
                    "encoded": any((s.watched or k == ("vp8", "high")) and not (
                        self.forward is not None and self.forward.replaces(k))
                        for k, s in sources),
                    "forwarded": any(self.forward is not None and self.forward.feeds(k)
                                     for k, _ in sources),
                    "keyframes": sum(s.keyframes for _, s in sources),
                    "frames": sum(e.frames for e in encoders),
                    "encode_ms_per_frame": round(sum(e.seconds for e in encoders) * 1000
                                                 / max(1, sum(e.frames for e in encoders)), 2),
                    "sites": sum(len(s.tracks) for _, s in sources),
                })
            out.append(entry)
        return out


class MediaEngine:
    """The synchronous face of the loop thread. Thread-safe; create one per process."""

    def __init__(self, *, ice_servers: list[dict[str, Any]] | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 relay_mode: str = "encoded", forward: str = "auto",
                 fast_send: bool = True) -> None:
        self.ice_servers = list(ice_servers or [])
        self.on_event = on_event
        self.relay_mode = relay_mode
        #: `YUANJIAO_FORWARD`: "auto" forwards the publisher's frames when they suit.
        self.forward_setting = forward
        #: `YUANJIAO_FAST_SEND`: the sites' fast send path unless a broadcast says otherwise.
        self.fast_send_setting = fast_send
        self.broadcasts: dict[int, Broadcast] = {}
        self.resources: dict[str, tuple[str, int]] = {}  # resource id -> (kind, occurrence)
        self.ended: dict[int, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- loop thread -------------------------------------------------------------------

    def start(self) -> MediaEngine:
        """Start the loop thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return self
            ready = threading.Event()

            def run() -> None:
                loop = self._loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                ready.set()
                try:
                    loop.run_forever()
                    pending = asyncio.all_tasks(loop)
                    for task in pending:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

            self._thread = threading.Thread(target=run, name="media-engine", daemon=True)
            self._thread.start()
            ready.wait()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def call(self, coro: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """Run a coroutine on the loop and wait for its result."""
        if self._loop is None:
            self.start()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def shutdown(self) -> None:
        """End every broadcast and stop the loop (tests, process exit)."""
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.call(self._shutdown(), timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        for occurrence_id in list(self.broadcasts):
            await self._end_broadcast(occurrence_id, reason="shutdown")

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("media event handler failed for %s", event.get("type"))

    # --- sync interface ----------------------------------------------------------------

    def publish(self, occurrence_id: int, offer_sdp: str,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Take the trainer's offer; returns {answer, resource_id, started, replaced}."""
        parse_offer(offer_sdp)
        return self.call(self._publish(int(occurrence_id), offer_sdp, dict(options or {})))

    def subscribe(self, occurrence_id: int, offer_sdp: str,
                  subscriber_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add a site; returns {answer, resource_id}. MediaError("not_live") when off air."""
        parse_offer(offer_sdp)
        return self.call(self._subscribe(int(occurrence_id), offer_sdp,
                                         dict(subscriber_info or {})))

    def stop(self, resource_id: str, occurrence_id: int | None = None) -> dict[str, Any] | None:
        """End a resource: a publisher ends the broadcast, a subscriber leaves.

        With `occurrence_id`, a resource of another occurrence is left alone (None).
        """
        return self.call(self._stop(resource_id, occurrence_id))

    def trickle(self, resource_id: str, fragment: str,
                if_match: list[str] | None = None) -> dict[str, Any] | None:
        """Trickle ICE (RFC 8840 fragment) into a resource: {occurrence_id, etag}, or None.

        MediaError "precondition_failed" when `if_match` names another entity tag,
        "ice_restart_unsupported" for an ICE restart (aiortc cannot restart ICE),
        "bad_sdp" for a fragment that is not one.
        """
        return self.call(self._trickle(resource_id, fragment, if_match))

    def end_broadcast(self, occurrence_id: int) -> bool:
        return self.call(self._end_broadcast(int(occurrence_id), reason="ended"))

    def stats(self, occurrence_id: int) -> dict[str, Any]:
        return self.call(self._stats(int(occurrence_id)))

    def pin(self, resource_id: str, layer: str | None) -> bool:
        """Pin a connected site to a layer ("high", "low", "audio"; None: automatic)."""
        return self.call(self._pin(resource_id, layer))

    def resource(self, resource_id: str) -> tuple[str, int] | None:
        return self.resources.get(resource_id)

    def describe(self, resource_id: str) -> dict[str, Any] | None:
        """Who a resource belongs to, without touching it: {kind, occurrence_id, info}.

        `info` is what the subscriber was created with (its owner among it); for the
        publisher, the publishing user's id. None when there is no such resource.
        """
        return self.call(self._describe(resource_id))

    def record(self, occurrence_id: int, path: str | None) -> bool:
        """Start recording a live broadcast to `path` (None stops it)."""
        return self.call(self._record(int(occurrence_id), path))

    # --- coroutines on the loop --------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(configuration=ice_configuration(self.ice_servers))

    async def _publish(self, occurrence_id: int, offer_sdp: str,
                       options: dict[str, Any]) -> dict[str, Any]:
        broadcast = self.broadcasts.get(occurrence_id)
        replaced = None
        if broadcast is not None:
            if options.get("user_id") is not None and broadcast.publisher_user not in (
                    None, options.get("user_id")) and not options.get("force"):
                raise MediaError("already_live", "another publisher is live")
            replaced = broadcast.publisher_pc
        resource_id = uuid.uuid4().hex
        pc = self._new_pc()
        started = broadcast is None
        if broadcast is None:
            broadcast = Broadcast(self, occurrence_id, options)
        incoming: list[Any] = []
        try:
            @pc.on("track")
            def _on_track(track: Any) -> None:
                incoming.append(track)

            @pc.on("connectionstatechange")
            async def _on_state() -> None:
                state = pc.connectionState
                if state == "connected":
                    self._emit({"type": "publisher_connected", "occurrence_id": occurrence_id,
                                "resource_id": resource_id})
                elif state in ("failed", "closed") and broadcast.publisher_id == resource_id \
                        and not broadcast.ended:
                    self._emit({"type": "publisher_disconnected",
                                "occurrence_id": occurrence_id, "resource_id": resource_id})
                    if broadcast.grace_task is None:
                        broadcast.grace_task = asyncio.ensure_future(
                            self._grace(broadcast, resource_id))

            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if not any(t.receiver.track is not None and t.kind == "video"
                       for t in pc.getTransceivers()):
                raise MediaError("bad_sdp", "the publisher's offer sends no video")
            answer_as_dtls_server(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except MediaError:
            await pc.close()
            raise
        except Exception as exc:
            await pc.close()
            raise MediaError("bad_sdp", f"cannot use this SDP offer: {exc}") from exc
        if started:
            self.broadcasts[occurrence_id] = broadcast
            self.ended.pop(occurrence_id, None)
        broadcast.attach_publisher(resource_id, pc)
        for track in incoming:
            broadcast.on_publisher_track(track, resource_id)
        if options.get("user_id") is not None:
            broadcast.publisher_user = options.get("user_id")
        self.resources[resource_id] = ("publisher", occurrence_id)
        if replaced is not None:
            closing = asyncio.ensure_future(replaced.close())
            broadcast.tasks.add(closing)
            closing.add_done_callback(broadcast.tasks.discard)
        if started:
            self._emit({"type": "broadcast_started", "occurrence_id": occurrence_id,
                        "resource_id": resource_id, "record_path": broadcast.record_path})
        return {"answer": pc.localDescription.sdp, "resource_id": resource_id,
                "started": started, "replaced": replaced is not None,
                "etag": etag_for(resource_id, local_ice_ufrag(pc))}

    async def _grace(self, broadcast: Broadcast, resource_id: str) -> None:
        await asyncio.sleep(PUBLISHER_GRACE_SECONDS)
        if broadcast.publisher_id == resource_id and not broadcast.ended:
            await self._end_broadcast(broadcast.occurrence_id, reason="publisher_lost")

    async def _subscribe(self, occurrence_id: int, offer_sdp: str,
                         info: dict[str, Any]) -> dict[str, Any]:
        broadcast = self.broadcasts.get(occurrence_id)
        if broadcast is None or broadcast.ended:
            raise MediaError("not_live", "nothing is live for this occurrence")
        offer = SessionDescription.parse(offer_sdp)
        offered = {c.mimeType.lower() for m in offer.media if m.kind == "video"
                   for c in m.rtp.codecs}
        # A site that takes the publisher's codec gets it while it is forwarded (no encode).
        forwarded = broadcast.forward.preferred_codec() if broadcast.forward else None
        preferred = [info.get("codec") or forwarded or "vp8", "vp8", "h264"]
        codec = next((c for c in preferred if c in VIDEO_CODECS
                      and VIDEO_CODECS[c][1].lower() in offered), None)
        wants_video = any(m.kind == "video" for m in offer.media)
        if wants_video and codec is None:
            raise MediaError("bad_sdp", "the offer has neither VP8 nor H.264")
        resource_id = uuid.uuid4().hex
        pc = self._new_pc()
        subscriber = Subscriber(resource_id, pc, info, codec or "none")
        start_layer = broadcast.start_layer(info)
        try:
            for media in offer.media:
                if media.kind == "video" and codec is not None:
                    track = self._video_track_for(broadcast, codec, start_layer)
                    transceiver = pc.addTransceiver(track, direction="sendonly")
                    caps = RTCRtpSender.getCapabilities("video").codecs
                    mime = VIDEO_CODECS[codec][1].lower()
                    transceiver.setCodecPreferences(
                        [c for c in caps if c.mimeType.lower() in (mime, "video/rtx")])
                    subscriber.tracks.append(track)
                elif media.kind == "audio":
                    track = self._audio_track_for(broadcast)
                    pc.addTransceiver(track, direction="sendonly")
                    subscriber.tracks.append(track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            answer_as_dtls_server(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            for track in subscriber.tracks:
                track.stop()
            await pc.close()
            raise MediaError("bad_sdp", f"cannot use this SDP offer: {exc}") from exc
        # One site's PLI/FIR goes to the shared encoder's rate-limited request, not to a
        # per-sender flag (a packet track has no encoder of its own to force).
        # Its receiver reports feed the site's link monitor, which picks its layer.
        subscriber.monitor = LinkMonitor(
            broadcast.layer_names if codec is not None else [AUDIO],
            start_layer if codec is not None else AUDIO, time.monotonic(),
            {name: layer.bitrate_kbps for name, layer in broadcast.layers.items()})
        video_senders = [t.sender for t in pc.getTransceivers()
                         if isinstance(t.sender.track, SubscriberTrack) and t.kind == "video"]
        if video_senders:
            subscriber.pacer = BurstPacer(
                lambda: broadcast.site_bitrate_kbps(subscriber),
                {sender._ssrc for sender in video_senders},
                lambda: subscriber.monitor.estimate_kbps if subscriber.monitor else None)
            for transport in {id(s.transport): s.transport for s in video_senders}.values():
                subscriber.pacer.install(transport)
            for sender in video_senders:  # NACKs answered from packets kept by time
                # aiortc's history is by count (128 packets): replaced by one by time
                sender._RTCRtpSender__rtp_history = (  # type: ignore[attr-defined]
                    RetransmitHistory(RETRANSMIT_MAX_AGE + 0.5))
        if broadcast.send_hub is not None:
            # Every site's media goes by the fast path (its own headers and SRTP on the
            # layer's shared payloads, batched sends); RTCP and NACK handling stay.
            outputs: dict[int, SiteOutput] = {}
            for transceiver in pc.getTransceivers():
                track = transceiver.sender.track
                if isinstance(track, SubscriberTrack):
                    video = track.kind == "video"
                    subscriber.fast_senders.append(FastSender.install(
                        transceiver.sender, track, broadcast.send_hub, outputs,
                        subscriber.pacer,
                        SentHistory(RETRANSMIT_MAX_AGE + 0.5) if video else None))
        for transceiver in pc.getTransceivers():
            track = transceiver.sender.track
            if isinstance(track, SubscriberTrack):
                transceiver.sender._send_keyframe = (  # type: ignore[method-assign]
                    track.request_keyframe)  # patched: keyframes come from our source
                if track.kind == "video":
                    subscriber.video_track = track
                self._watch_rtcp(broadcast, subscriber, transceiver.sender, track.kind)
            elif track is not None and transceiver.kind == "video":
                # mediarelay: the sender's own encoder handles its PLIs
                pass

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = pc.connectionState
            if state == "connected" and not subscriber.connected:
                subscriber.connected = True
                self._emit({"type": "subscriber_joined", "occurrence_id": occurrence_id,
                            "resource_id": resource_id, "info": info})
            elif state in ("failed", "closed"):
                await self._remove_subscriber(broadcast, resource_id)

        broadcast.subscribers[resource_id] = subscriber
        self.resources[resource_id] = ("subscriber", occurrence_id)
        return {"answer": pc.localDescription.sdp, "resource_id": resource_id,
                "codec": codec, "etag": etag_for(resource_id, local_ice_ufrag(pc))}

    @staticmethod
    def _watch_rtcp(broadcast: Broadcast, subscriber: Subscriber, sender: RTCRtpSender,
                    kind: str) -> None:
        """Wrap one sender's RTCP handling: receiver reports go to the site's link monitor
        (loss, jitter, the sender's round-trip estimate); NACKs go to the site's
        retransmission queue (`Subscriber.queue_retransmits`), re-sent from aiortc's
        history within a share of the site's layer bitrate."""
        original = sender._handle_rtcp_packet
        clock_khz = 90.0 if kind == "video" else 48.0

        async def handle(packet: Any) -> None:
            if kind == "video" and isinstance(packet, RtcpRtpfbPacket) and \
                    packet.fmt == RTCP_RTPFB_NACK:
                subscriber.queue_retransmits(
                    sender, packet.lost, lambda: broadcast.site_bitrate_kbps(subscriber))
                return
            await original(packet)
            if kind == "video" and isinstance(packet, RtcpPsfbPacket) and \
                    packet.fmt == RTCP_PSFB_APP and subscriber.monitor is not None:
                with contextlib.suppress(ValueError):
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    if sender._ssrc in ssrcs:
                        subscriber.monitor.estimate(bitrate / 1000)
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc != sender._ssrc:
                        continue
                    rtt = getattr(sender, "_RTCRtpSender__rtt", None)
                    try:
                        broadcast.on_receiver_report(
                            subscriber, kind, report.fraction_lost,
                            report.jitter / clock_khz, rtt * 1000 if rtt is not None else None)
                    except Exception:
                        log.exception("receiver report handling failed")

        sender._handle_rtcp_packet = handle  # type: ignore[method-assign]  # patched: see above

    def _video_track_for(self, broadcast: Broadcast, codec: str, layer: str = "high") -> Any:
        if broadcast.mode == "mediarelay":
            source = broadcast.relay_sources.get("video")
            if source is None:
                raise MediaError("not_live", "the publisher sends no video yet")
            return self._relayed(broadcast, source)
        source = broadcast.ensure_video_source(codec, layer)
        track = SubscriberTrack("video", source, as_av_packet=(codec == "h264"))
        source.attach(track)
        return track

    @staticmethod
    def _relayed(broadcast: Broadcast, source: Any) -> Any:
        if broadcast.media_relay is None:
            raise MediaError("not_live", "the broadcast has no relay")
        return broadcast.media_relay.subscribe(source, buffered=False)

    def _audio_track_for(self, broadcast: Broadcast) -> Any:
        if broadcast.mode == "mediarelay":
            source = broadcast.relay_sources.get("audio")
            if source is None:
                raise MediaError("not_live", "the publisher sends no audio yet")
            return self._relayed(broadcast, source)
        track = SubscriberTrack("audio", broadcast.audio_source)
        broadcast.audio_source.attach(track)
        return track

    async def _remove_subscriber(self, broadcast: Broadcast, resource_id: str) -> bool:
        subscriber = broadcast.subscribers.pop(resource_id, None)
        self.resources.pop(resource_id, None)
        if subscriber is None:
            return False
        broadcast.remember_layer(subscriber)
        subscriber.close()
        for track in subscriber.tracks:
            track.stop()
        await subscriber.pc.close()
        self._emit({"type": "subscriber_left", "occurrence_id": broadcast.occurrence_id,
                    "resource_id": resource_id, "info": subscriber.info,
                    "was_connected": subscriber.connected})
        return True

    def _held(self, resource_id: str) -> tuple[str, Broadcast, Subscriber | None] | None:
        """A live resource's kind, its broadcast and (for a subscriber) its subscriber;
        None when the resource or its broadcast is gone."""
        entry = self.resources.get(resource_id)
        if entry is None:
            return None
        kind, occurrence_id = entry
        broadcast = self.broadcasts.get(occurrence_id)
        if broadcast is None:
            return None
        if kind == "publisher":
            return kind, broadcast, None
        subscriber = broadcast.subscribers.get(resource_id)
        return (kind, broadcast, subscriber) if subscriber is not None else None

    async def _describe(self, resource_id: str) -> dict[str, Any] | None:
        held = self._held(resource_id)
        if held is None:
            return None
        kind, broadcast, subscriber = held
        info: dict[str, Any] = ({"user_id": broadcast.publisher_user} if subscriber is None
                                else dict(subscriber.info))
        return {"kind": kind, "occurrence_id": broadcast.occurrence_id, "info": info}

    async def _stop(self, resource_id: str, expected_occurrence: int | None = None
                    ) -> dict[str, Any] | None:
        entry = self.resources.get(resource_id)
        if entry is None:
            return None
        kind, occurrence_id = entry
        if expected_occurrence is not None and occurrence_id != int(expected_occurrence):
            return None
        broadcast = self.broadcasts.get(occurrence_id)
        if broadcast is None:
            self.resources.pop(resource_id, None)
            return None
        if kind == "publisher":
            if broadcast.publisher_id != resource_id:
                self.resources.pop(resource_id, None)
                return {"kind": kind, "occurrence_id": occurrence_id, "ended": False}
            await self._end_broadcast(occurrence_id, reason="stopped")
            return {"kind": kind, "occurrence_id": occurrence_id, "ended": True}
        await self._remove_subscriber(broadcast, resource_id)
        return {"kind": kind, "occurrence_id": occurrence_id}

    def _resource_pc(self, resource_id: str) -> tuple[int, RTCPeerConnection] | None:
        held = self._held(resource_id)
        if held is None:
            return None
        _kind, broadcast, subscriber = held
        pc: RTCPeerConnection | None
        if subscriber is not None:
            pc = subscriber.pc
        else:
            pc = broadcast.publisher_pc if broadcast.publisher_id == resource_id else None
        return (broadcast.occurrence_id, pc) if pc is not None else None

    async def _trickle(self, resource_id: str, text: str,
                       if_match: list[str] | None) -> dict[str, Any] | None:
        found = self._resource_pc(resource_id)
        if found is None:
            return None
        occurrence_id, pc = found
        etag = etag_for(resource_id, local_ice_ufrag(pc))
        if if_match is not None and "*" not in if_match and etag not in if_match:
            raise MediaError("precondition_failed", "If-Match names another ICE session")
        try:
            fragment = parse_sdpfrag(text)
        except ValueError as exc:
            raise MediaError("bad_sdp", f"not a trickle-ICE SDP fragment: {exc}") from exc
        current = remote_ice_ufrag(pc)
        if (if_match is not None and "*" in if_match) or (
                fragment.ufrag is not None and fragment.ufrag != current):
            raise MediaError("ice_restart_unsupported", "ICE restarts are not supported")
        first_mid = next((t.mid for t in pc.getTransceivers() if t.mid is not None), None)
        for mid, line in fragment.candidates:
            try:
                candidate = candidate_from_sdp(line)
            except (AssertionError, ValueError, IndexError) as exc:
                raise MediaError("bad_sdp", f"bad candidate line: {line[:60]}") from exc
            candidate.sdpMid = mid if mid is not None else first_mid
            if candidate.sdpMid is None:
                candidate.sdpMLineIndex = 0
            await pc.addIceCandidate(candidate)
        if fragment.end_of_candidates:
            await pc.addIceCandidate(None)
        return {"occurrence_id": occurrence_id, "etag": etag,
                "candidates": len(fragment.candidates)}

    async def _end_broadcast(self, occurrence_id: int, reason: str) -> bool:
        broadcast = self.broadcasts.pop(occurrence_id, None)
        if broadcast is None or broadcast.ended:
            return False
        broadcast.ended = True
        self.ended[occurrence_id] = time.time()
        for source in [*broadcast.video_sources.values(), broadcast.audio_source]:
            source.end()
        for resource_id in list(broadcast.subscribers):
            await self._remove_subscriber(broadcast, resource_id)
        for edge_forward in broadcast.__dict__.get("edge_forwards", {}).values():
            edge_forward.detach(broadcast)  # video.janus: its socket and RTCP reader
        for resource_id, (_kind, occ) in list(self.resources.items()):
            if occ == occurrence_id:
                self.resources.pop(resource_id, None)
        if broadcast.publisher_pc is not None:
            await broadcast.publisher_pc.close()
        for task in list(broadcast.tasks):
            task.cancel()
        if broadcast.grace_task is not None and broadcast.grace_task is not \
                asyncio.current_task():
            broadcast.grace_task.cancel()
        # Let an encode in flight finish before the file is closed.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(broadcast.executor, lambda: None)
        broadcast.executor.shutdown(wait=False)
        if broadcast.hls is not None:
            broadcast.hls.close()  # its thread writes the end of the playlist
        recording = None
        if broadcast.recorder is not None:
            duration = broadcast.recorder.close()
            path = broadcast.recorder.path
            size = os.path.getsize(path) if os.path.exists(path) else 0
            ok = not broadcast.recorder.failed and broadcast.recorder.container is not None
            recording = {"path": path, "duration_seconds": round(duration, 3),
                         "size_bytes": size, "status": "complete" if ok else "failed",
                         # Forwarded H.264 is kept as it came: Matroska, not WebM.
                         "mime_type": "video/x-matroska"
                         if broadcast.recorder.codec == "h264" else "video/webm"}
        self._emit({"type": "broadcast_ended", "occurrence_id": occurrence_id,
                    "reason": reason, "recording": recording})
        return True

    async def _stats(self, occurrence_id: int) -> dict[str, Any]:
        broadcast = self.broadcasts.get(occurrence_id)
        if broadcast is None:
            state = "ended" if occurrence_id in self.ended else "waiting"
            return {"state": state, "occurrence_id": occurrence_id, "subscribers": 0,
                    "sites": []}
        return broadcast.stats()

    async def _pin(self, resource_id: str, layer: str | None) -> bool:
        held = self._held(resource_id)
        if held is None:
            return False
        _kind, broadcast, subscriber = held
        if subscriber is None or subscriber.monitor is None:
            return False
        if layer is not None and layer not in subscriber.monitor.layers:
            raise MediaError("bad_layer", f"no layer {layer!r} for this site")
        broadcast.pin_site(subscriber, layer)
        return True

    async def _record(self, occurrence_id: int, path: str | None) -> bool:
        broadcast = self.broadcasts.get(occurrence_id)
        if broadcast is None:
            return False
        if broadcast.recorder is not None:
            broadcast.recorder.close()
            broadcast.recorder = None
        broadcast.record_path = path
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            broadcast.recorder = Recorder(path, broadcast.audio_encoder.extradata)
            broadcast._told_failure = False
        return True


__all__ = ["AUDIO_TIME_BASE", "MediaEngine", "MediaError", "parse_offer"]
