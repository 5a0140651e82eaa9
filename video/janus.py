"""Janus edges past one origin: the origin encodes once, every edge fans the packets out.

Media side (in the origin's process, on the engine's loop): `forward()` sends a live
broadcast's encoded VP8 and Opus packets as RTP over UDP to one edge's Streaming mountpoint
(`EdgeForward`, a subscriber of the broadcast's packet sources like a site's track: a new
edge starts at a keyframe, the cached one or a new one). No decode, no encode per edge.

Keyframe requests come back the same way: the mountpoint's video has an RTCP port; the
origin sends it a sender report now and then from the socket it sends RTP from (Janus
latches that address), and Janus sends its viewers' PLI/FIR there (at most one a second
per mountpoint). Each one asks the broadcast's VP8 source for a keyframe, which the
encoder grants at most once a second (relay.KEYFRAME_REQUEST_MIN_INTERVAL) whatever the
number of edges and sites asking.

Control side (in the web app): `JanusEdge` speaks Janus's HTTP API with its API secret:
the mountpoint of an occurrence is created with the Streaming plugin's admin key, a site's
watch session is opened there (Janus offers, the page answers through our signalling:
video.janus_views). `allocate()` picks a healthy edge by load (its viewers of the
occurrence, as Janus counts them) once the origin serves YUANJIAO_ORIGIN_MAX_SITES sites.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import requests

log = logging.getLogger(__name__)

VIDEO_PT = 100
AUDIO_PT = 111
#: A sender report to the edge's RTCP port this often (keeps Janus's return path latched).
SENDER_REPORT_SECONDS = 2.0
#: An edge that did not answer /info within this long is skipped for this long.
HEALTH_TIMEOUT = 2.5
HEALTH_CACHE_SECONDS = 2.0


# --- media side: RTP to an edge ---------------------------------------------------------


class _RtpOut:
    """One kind's packets (the same objects every site gets) as RTP to one port."""

    def __init__(self, kind: str, sock: socket.socket, address: tuple[str, int]) -> None:
        self.kind = kind
        self.sock = sock
        self.address = address
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.sent = 0
        self.octets = 0
        self.errors = 0
        self.stopped = False
        #: Where sender reports go (the mountpoint's RTCP port), if it has one.
        self.rtcp_address: tuple[str, int] | None = None
        self._last_report = 0.0
        self._last_timestamp = 0
        self._picture_id = random.getrandbits(15)
        if kind == "video":
            from aiortc.codecs.vpx import Vp8Encoder

            self._vp8 = Vp8Encoder()

    def push(self, packet: Any) -> None:
        from aiortc.rtp import RtpPacket

        if self.stopped:
            return
        if self.kind == "video":
            payloads, timestamp = self._vp8.pack(packet)
            pt = VIDEO_PT
        else:
            payloads = [bytes(packet)]
            timestamp = int(packet.pts * packet.time_base * 48000)
            pt = AUDIO_PT
        for i, payload in enumerate(payloads):
            rtp = RtpPacket(payload_type=pt, marker=int(i == len(payloads) - 1),
                            sequence_number=self.seq, timestamp=timestamp & 0xFFFFFFFF,
                            ssrc=self.ssrc, payload=payload)
            self.seq = (self.seq + 1) & 0xFFFF
            data = rtp.serialize()
            try:
                self.sock.sendto(data, self.address)
                self.sent += 1
                self.octets += len(payload)
            except OSError:  # the edge is gone or the buffer is full: drop, never block
                self.errors += 1
        self._last_timestamp = timestamp & 0xFFFFFFFF
        if self.rtcp_address is not None and \
                time.monotonic() - self._last_report >= SENDER_REPORT_SECONDS:
            self.sender_report()

    def sender_report(self) -> None:
        """An RTCP sender report to the edge's RTCP port, from the RTP socket."""
        from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

        if self.rtcp_address is None or self.stopped:
            return
        self._last_report = time.monotonic()
        now = time.time() + 2208988800  # NTP epoch
        ntp = (int(now) << 32) | int((now % 1) * (1 << 32))
        report = RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp & 0xFFFFFFFFFFFFFFFF, rtp_timestamp=self._last_timestamp,
            packet_count=self.sent & 0xFFFFFFFF, octet_count=self.octets & 0xFFFFFFFF))
        try:
            self.sock.sendto(bytes(report), self.rtcp_address)
        except OSError:
            self.errors += 1

    def stop(self) -> None:
        self.stopped = True


class EdgeForward:
    """A broadcast's packets to one edge's mountpoint; its keyframe requests back."""

    def __init__(self, host: str, video_port: int, audio_port: int,
                 video_rtcp_port: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.video = _RtpOut("video", self.sock, (host, int(video_port)))
        self.audio = _RtpOut("audio", self.sock, (host, int(audio_port)))
        if video_rtcp_port:
            self.video.rtcp_address = (host, int(video_rtcp_port))
        self.target = (host, int(video_port), int(audio_port), int(video_rtcp_port or 0))
        #: PLI/FIR received from the edge (each one asked the encoder for a keyframe).
        self.keyframe_requests = 0
        self._source: Any = None
        self._loop: Any = None

    def attach(self, broadcast: Any) -> None:
        """On the engine's loop: start sending, and listen for the edge's feedback."""
        import asyncio

        broadcast.audio_source.attach(self.audio)
        self._source = broadcast.ensure_video_source("vp8")
        self._source.attach(self.video)
        if self.video.rtcp_address is not None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.sock.fileno(), self._on_feedback)
            self.video.sender_report()  # Janus learns where to send PLIs at once

    def _on_feedback(self) -> None:
        from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket

        while True:
            try:
                data = self.sock.recv(1500)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable from a dead edge
                continue
            try:
                packets = RtcpPacket.parse(data)
            except ValueError:
                continue
            for packet in packets:
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI,
                                                                          RTCP_PSFB_FIR):
                    self.keyframe_requests += 1
                    if self._source is not None:
                        self._source.request_keyframe()  # the encoder's limit applies

    def detach(self, broadcast: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        broadcast.audio_source.detach(self.audio)
        broadcast.ensure_video_source("vp8").detach(self.video)
        self.video.stop()
        self.audio.stop()
        self.sock.close()

    def describe(self) -> dict[str, Any]:
        return {"target": list(self.target), "rtp_sent": self.video.sent + self.audio.sent,
                "rtp_errors": self.video.errors + self.audio.errors,
                "keyframe_requests": self.keyframe_requests}


def forward(engine: Any, occurrence_id: int, target: dict[str, Any]) -> bool:
    """Make the origin send the occurrence's broadcast to `target` ({edge, host,
    video_port, audio_port}); idempotent per edge. False when nothing is live."""

    async def run() -> bool:
        broadcast = engine.broadcasts.get(int(occurrence_id))
        if broadcast is None or broadcast.ended:
            return False
        forwards: dict[str, EdgeForward] = broadcast.__dict__.setdefault("edge_forwards", {})
        edge = str(target["edge"])
        wanted = (str(target["host"]), int(target["video_port"]), int(target["audio_port"]),
                  int(target.get("video_rtcp_port") or 0))
        current = forwards.get(edge)
        if current is not None and current.target == wanted:
            return True
        if current is not None:
            current.detach(broadcast)
        forward_ = EdgeForward(*wanted)
        forward_.attach(broadcast)
        forwards[edge] = forward_
        return True

    return bool(engine.call(run()))


def origin_forward(backend: Any, occurrence_id: int, target: dict[str, Any]) -> bool:
    """`forward` on the in-process engine, or on the media node of the occurrence."""
    if hasattr(backend, "broadcasts"):
        return forward(backend, occurrence_id, target)
    _index, url = backend.node_for(occurrence_id)
    response = requests.post(f"{url}/forward/{int(occurrence_id)}", json=target,
                             headers=backend._headers(), timeout=10)
    response.raise_for_status()
    return bool(response.json().get("ok"))


# --- control side: Janus's HTTP API -----------------------------------------------------


class JanusError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusEdge:
    """One edge's HTTP API (`http://host:8188/janus`)."""

    def __init__(self, url: str, secret: str, admin_key: str) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.admin_key = admin_key
        self.name = urlparse(self.url).netloc
        self.host = urlparse(self.url).hostname or "127.0.0.1"
        self._healthy = (0.0, False)
        self._http = requests.Session()

    def _post(self, path: str, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        body = {**body, "transaction": uuid.uuid4().hex, "apisecret": self.secret}
        reply = self._http.post(self.url + path, json=body, timeout=timeout).json()
        if reply.get("janus") == "error":
            err = reply.get("error", {})
            raise JanusError(err.get("code", 0), err.get("reason", ""))
        return reply

    def healthy(self, fresh: bool = False) -> bool:
        checked, ok = self._healthy
        if not fresh and time.monotonic() - checked < HEALTH_CACHE_SECONDS:
            return ok
        try:
            ok = self._http.get(self.url + "/info", timeout=HEALTH_TIMEOUT).ok
        except requests.RequestException:
            ok = False
        self._healthy = (time.monotonic(), ok)
        return ok

    def open(self) -> tuple[int, int]:
        """A new session with the Streaming plugin attached: (session, handle)."""
        session = self._post("", {"janus": "create"})["data"]["id"]
        handle = self._post(f"/{session}", {"janus": "attach",
                                            "plugin": "janus.plugin.streaming"})["data"]["id"]
        return session, handle

    def close(self, session: int) -> None:
        with contextlib.suppress(requests.RequestException, JanusError, ValueError):
            self._post(f"/{session}", {"janus": "destroy"}, timeout=3)

    def keepalive(self, session: int) -> bool:
        try:
            self._post(f"/{session}", {"janus": "keepalive"}, timeout=3)
            return True
        except (requests.RequestException, JanusError, ValueError):
            return False

    def _plugin(self, session: int, handle: int, body: dict[str, Any],
                jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        return self._post(f"/{session}/{handle}", message)

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous Streaming request on a short-lived session."""
        session, handle = self.open()
        try:
            reply = self._plugin(session, handle, body)
            data = reply.get("plugindata", {}).get("data", {})
            if "error_code" in data:
                raise JanusError(data["error_code"], data.get("error", ""))
            return data
        finally:
            self.close(session)

    def mountpoint(self, occurrence_id: int) -> dict[str, Any]:
        """The occurrence's RTP mountpoint on this edge, created if missing:
        {"host", "video_port", "audio_port", "video_rtcp_port", "viewers"}."""
        try:
            info = self._request({"request": "info", "id": int(occurrence_id),
                                  "secret": self.admin_key})["info"]
        except JanusError as exc:
            if exc.code != 455:  # no such mountpoint
                raise
            self._request({
                "request": "create", "admin_key": self.admin_key, "type": "rtp",
                "id": int(occurrence_id), "description": f"occurrence {occurrence_id}",
                "secret": self.admin_key, "permanent": False,
                "media": [
                    # bufferkf: a new viewer starts at once from the last keyframe;
                    # rtcpport: its viewers' keyframe requests come back to the origin.
                    {"type": "video", "mid": "v", "port": 0, "pt": VIDEO_PT, "codec": "vp8",
                     "bufferkf": True, "rtcpport": 0},
                    {"type": "audio", "mid": "a", "port": 0, "pt": AUDIO_PT, "codec": "opus"},
                ]})
            info = self._request({"request": "info", "id": int(occurrence_id),
                                  "secret": self.admin_key})["info"]
        ports = {m.get("type"): m.get("port") for m in info.get("media", [])}
        rtcp = {m.get("type"): m.get("rtcpport") for m in info.get("media", [])}
        return {"host": self.host, "video_port": ports.get("video"),
                "audio_port": ports.get("audio"), "video_rtcp_port": rtcp.get("video"),
                "viewers": info.get("viewers", 0)}

    def viewers(self, occurrence_id: int) -> int:
        try:
            return int(self._request({"request": "info", "id": int(occurrence_id),
                                      "secret": self.admin_key})["info"].get("viewers", 0))
        except JanusError:
            return 0

    def watch(self, occurrence_id: int, timeout: float = 10.0) -> dict[str, Any]:
        """Open a watch session: {"session", "handle", "offer"} (Janus's SDP offer)."""
        session, handle = self.open()
        try:
            self._plugin(session, handle, {"request": "watch", "id": int(occurrence_id)})
            offer = self._wait_jsep(session, timeout)
        except Exception:
            self.close(session)
            raise
        return {"session": session, "handle": handle, "offer": offer}

    def _wait_jsep(self, session: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            params: dict[str, str | int] = {
                "maxev": 5, "apisecret": self.secret, "rid": int(time.time() * 1000)}
            events = self._http.get(f"{self.url}/{session}", timeout=timeout,
                                    params=params).json()
            for event in events if isinstance(events, list) else [events]:
                data = event.get("plugindata", {}).get("data", {})
                if "error_code" in data:
                    raise JanusError(data["error_code"], data.get("error", ""))
                if event.get("jsep", {}).get("type") == "offer":
                    return event["jsep"]["sdp"]
        raise JanusError(0, "no offer from the edge in time")

    def start(self, session: int, handle: int, answer: str) -> None:
        self._plugin(session, handle, {"request": "start"}, {"type": "answer", "sdp": answer})


# --- allocation ---------------------------------------------------------------------------


class Edges:
    """The configured edges (YUANJIAO_JANUS_EDGES) and the watch sessions opened on them."""

    def __init__(self, urls: list[str], secret: str, admin_key: str,
                 origin_max_sites: int, redis_url: str | None = None,
                 prefix: str = "yuanjiao") -> None:
        self.edges = [JanusEdge(u, secret, admin_key) for u in urls]
        self.origin_max_sites = origin_max_sites
        self.sessions = SessionRegistry(redis_url, prefix)

    def __bool__(self) -> bool:
        return bool(self.edges)

    def by_name(self, name: str) -> JanusEdge | None:
        return next((e for e in self.edges if e.name == name), None)

    def allocate(self, occurrence_id: int, origin_sites: int) -> JanusEdge | None:
        """The edge a site should watch from, or None for the origin: the origin keeps
        sites until it serves `origin_max_sites`; then the healthy edge with the fewest
        viewers of this occurrence."""
        if not self.edges or origin_sites < self.origin_max_sites:
            return None
        healthy = [e for e in self.edges if e.healthy()]
        if not healthy:  # the cached answers may be a moment old: ask again before the origin
            healthy = [e for e in self.edges if e.healthy(fresh=True)]
        if not healthy:
            return None
        loads = {e.name: self.sessions.count(occurrence_id, e.name) for e in healthy}
        return min(healthy, key=lambda e: (loads[e.name], self.edges.index(e)))


#: A watch session not kept alive for this long is dropped from the live list.
SESSION_TTL_SECONDS = 60


class SessionRegistry:
    """Watch sessions on the edges, across web processes (Redis) or in this process:
    token -> {occurrence_id, site_id, edge, session, handle, label, joined_at, seen}."""

    def __init__(self, redis_url: str | None, prefix: str) -> None:
        self.prefix = prefix
        self._local: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.redis = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=2,
                                              socket_connect_timeout=2)

    def _key(self, occurrence_id: int) -> str:
        return f"{self.prefix}:edge-sessions:{int(occurrence_id)}"

    def put(self, token: str, entry: dict[str, Any]) -> None:
        entry = {**entry, "seen": time.time()}
        with self._lock:
            self._local[token] = entry
        if self.redis is not None:
            try:
                self.redis.hset(self._key(entry["occurrence_id"]), token, json.dumps(entry))
                self.redis.expire(self._key(entry["occurrence_id"]), 24 * 3600)
            except Exception:
                log.warning("Redis unreachable: edge session kept in this process only")

    def get(self, occurrence_id: int, token: str) -> dict[str, Any] | None:
        if self.redis is not None:
            try:
                raw = self.redis.hget(self._key(occurrence_id), token)
                return json.loads(raw) if raw else None
            except Exception:
                pass
        with self._lock:
            entry = self._local.get(token)
        return entry if entry and entry["occurrence_id"] == occurrence_id else None

    def touch(self, occurrence_id: int, token: str) -> dict[str, Any] | None:
        entry = self.get(occurrence_id, token)
        if entry is not None:
            self.put(token, entry)
        return entry

    def remove(self, occurrence_id: int, token: str) -> dict[str, Any] | None:
        entry = self.get(occurrence_id, token)
        with self._lock:
            self._local.pop(token, None)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.hdel(self._key(occurrence_id), token)
        return entry

    def _entries(self, occurrence_id: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        if self.redis is not None:
            try:
                entries = [json.loads(v) for v in
                           self.redis.hgetall(self._key(occurrence_id)).values()]
            except Exception:
                entries = []
        if not entries:
            with self._lock:
                entries = [e for e in self._local.values()
                           if e["occurrence_id"] == occurrence_id]
        return entries

    def live(self, occurrence_id: int) -> list[dict[str, Any]]:
        """The sessions of an occurrence kept alive lately."""
        cutoff = time.time() - SESSION_TTL_SECONDS
        return [e for e in self._entries(occurrence_id) if e.get("seen", 0) >= cutoff]

    def stale(self, occurrence_id: int) -> list[dict[str, Any]]:
        """The sessions of an occurrence nobody kept alive lately."""
        cutoff = time.time() - SESSION_TTL_SECONDS
        return [e for e in self._entries(occurrence_id) if e.get("seen", 0) < cutoff]

    def count(self, occurrence_id: int, edge: str) -> int:
        return sum(1 for e in self.live(occurrence_id) if e.get("edge") == edge)
