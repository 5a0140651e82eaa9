"""A media node: the engine in its own process, behind a tiny HTTP API.

    python -m video.node --port 8765 --secret "$YUANJIAO_MEDIA_NODE_SECRET"

The web app reaches it when `YUANJIAO_MEDIA_NODES` lists its URL (the node is chosen by
occurrence id). Every request must carry `X-Yuanjiao-Node-Secret`. The API mirrors the
engine's synchronous interface:

- `POST /whip/<occurrence_id>` (application/sdp; options as JSON in `X-Yuanjiao-Meta`)
  and `POST /whep/<occurrence_id>` (subscriber info in `X-Yuanjiao-Meta`): 201, the
  SDP answer, `Location`, and `X-Yuanjiao-Result` (JSON: resource_id, started, ...).
- `PATCH /resources/<resource_id>` (application/trickle-ice-sdpfrag; the caller's
  `If-Match` passed on): 200 and JSON {occurrence_id, etag}.
- `DELETE /resources/<resource_id>`, `POST /end/<occurrence_id>`,
  `GET /stats/<occurrence_id>`, `POST /record/<occurrence_id>` ({"path": ...}).
- `GET /events?after=<seq>&wait=<seconds>&boot=<boot>`: the event log, long-polled by the
  web app ({events, last, boot}: `boot` names this process's log; a caller that names
  another is answered at once).
- `POST /forward/<occurrence_id>` ({edge, host, video_port, audio_port, video_rtcp_port}):
  send the broadcast as RTP to a Janus edge's mountpoint, its keyframe requests back
  (video.janus).

Recordings are written where the web app says (`record_path`), so the node and the web
app must share YUANJIAO_RECORDINGS_DIR (the same path on a shared disk), or the node's
files must be copied there; see docs/media.md.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import logging
import os
import re
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from video import janus
from video.engine import MediaEngine, MediaError

log = logging.getLogger(__name__)

STATUS_FOR = {"bad_sdp": 400, "not_live": 503, "already_live": 409,
              "precondition_failed": 412, "ice_restart_unsupported": 422}


class EventLog:
    """Engine events with sequence numbers, for long-polling web apps."""

    def __init__(self, keep: int = 5000) -> None:
        self.events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(
            maxlen=keep)
        self.seq = 0
        self.cond = threading.Condition()
        #: This process's log: a restarted node's log starts again under a new one.
        self.boot = uuid.uuid4().hex

    def append(self, event: dict[str, Any]) -> None:
        with self.cond:
            self.seq += 1
            self.events.append((self.seq, event))
            self.cond.notify_all()

    def since(self, after: int | None, wait: float,
              boot: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Events after `after`, waiting up to `wait` s for one. A caller that followed
        another process's log (its `boot`, or a number past this log's end) is answered at
        once, so that it starts again from this log's first event instead of waiting."""
        with self.cond:
            if after is None or (boot is not None and boot != self.boot) or after > self.seq:
                return [], self.seq
            if self.seq <= after:
                self.cond.wait(timeout=wait)
            return [e for s, e in self.events if s > after], self.seq


def make_handler(engine: MediaEngine, events: EventLog, secret: str) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("node http: " + fmt, *args)

        def _send(self, status: int, body: bytes | str | dict[str, Any],
                  content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            if isinstance(body, dict):
                body = json.dumps(body)
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            given = self.headers.get("X-Yuanjiao-Node-Secret", "")
            if secret and hmac.compare_digest(given.encode(), secret.encode()):
                return True
            self._send(401, {"error": "unauthorized", "message": "bad node secret"})
            return False

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _route(self, method: str) -> None:
            if not self._authorized():
                return
            url = urlparse(self.path)
            try:
                self._dispatch(method, url.path, parse_qs(url.query))
            except MediaError as exc:
                self._send(STATUS_FOR.get(exc.code, 500),
                           {"error": exc.code, "message": exc.message})
            except (ValueError, KeyError) as exc:
                self._send(400, {"error": "bad_request", "message": str(exc)})

        def _dispatch(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            if method == "POST" and (m := re.fullmatch(r"/(whip|whep)/(\d+)", path)):
                kind, occurrence_id = m.group(1), int(m.group(2))
                meta = json.loads(self.headers.get("X-Yuanjiao-Meta") or "{}")
                sdp = self._body().decode()
                call = engine.publish if kind == "whip" else engine.subscribe
                result = call(occurrence_id, sdp, meta)
                answer = result.pop("answer")
                self._send(201, answer, "application/sdp", {
                    "Location": f"/{kind}/{occurrence_id}/{result['resource_id']}",
                    "X-Yuanjiao-Result": json.dumps(result)})
            elif method == "DELETE" and (m := re.fullmatch(
                    r"/(?:resources|whip/\d+|whep/\d+)/(\w+)", path)):
                expected = int(query["occurrence"][0]) if "occurrence" in query else None
                stopped = engine.stop(m.group(1), expected)
                if stopped is None:
                    self._send(404, {"error": "not_found", "message": "no such resource"})
                else:
                    self._send(200, stopped)
            elif method == "GET" and (m := re.fullmatch(r"/resources/(\w+)", path)):
                described = engine.describe(m.group(1))
                if described is None:
                    self._send(404, {"error": "not_found", "message": "no such resource"})
                else:
                    self._send(200, described)
            elif method == "POST" and (m := re.fullmatch(r"/resources/(\w+)/layer", path)):
                body = json.loads(self._body() or b"{}")
                pinned = engine.pin(m.group(1), body.get("layer"))
                self._send(200 if pinned else 404, {"pinned": pinned})
            elif method == "PATCH" and (m := re.fullmatch(r"/resources/(\w+)", path)):
                if_match = self.headers.get("If-Match")
                tags = [t.strip() for t in if_match.split(",")] if if_match else None
                trickled = engine.trickle(m.group(1), self._body().decode(), tags)
                if trickled is None:
                    self._send(404, {"error": "not_found", "message": "no such resource"})
                else:
                    self._send(200, trickled)
            elif method == "POST" and (m := re.fullmatch(r"/end/(\d+)", path)):
                self._send(200, {"ended": engine.end_broadcast(int(m.group(1)))})
            elif method == "GET" and (m := re.fullmatch(r"/stats/(\d+)", path)):
                self._send(200, engine.stats(int(m.group(1))))
            elif method == "POST" and (m := re.fullmatch(r"/record/(\d+)", path)):
                body = json.loads(self._body() or b"{}")
                self._send(200, {"ok": engine.record(int(m.group(1)), body.get("path"))})
            elif method == "POST" and (m := re.fullmatch(r"/forward/(\d+)", path)):
                body = json.loads(self._body() or b"{}")  # RTP to a Janus edge (video.janus)
                self._send(200, {"ok": janus.forward(engine, int(m.group(1)), body)})
            elif method == "GET" and path == "/events":
                after = int(query["after"][0]) if "after" in query else None
                wait = min(25.0, float(query.get("wait", ["20"])[0]))
                boot = query["boot"][0] if "boot" in query else None
                batch, last = events.since(after, wait, boot)
                self._send(200, {"events": batch, "last": last, "boot": events.boot})
            elif method == "GET" and path == "/health":
                self._send(200, {"ok": True, "broadcasts": len(engine.broadcasts)})
            else:
                self._send(404, {"error": "not_found", "message": path})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


def serve(host: str, port: int, secret: str, *, ice_servers: list[dict[str, Any]],
          relay_mode: str = "encoded", forward: str = "auto", fast_send: bool = True) -> None:
    """Run a node until SIGTERM/SIGINT; ends every broadcast (closing recordings) on exit."""
    events = EventLog()
    engine = MediaEngine(ice_servers=ice_servers, on_event=events.append,
                         relay_mode=relay_mode, forward=forward, fast_send=fast_send).start()
    server = ThreadingHTTPServer((host, port), make_handler(engine, events, secret))
    server.daemon_threads = True

    def _stop(*_args: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("media node listening on http://%s:%s (relay %s)", host, port, relay_mode)
    try:
        server.serve_forever()
    finally:
        engine.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Yuanjiao media node (aiortc relay)")
    parser.add_argument("--host", default=os.environ.get("YUANJIAO_NODE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret", default=os.environ.get("YUANJIAO_MEDIA_NODE_SECRET", ""))
    parser.add_argument("--relay", choices=("encoded", "mediarelay"), default="encoded",
                        help="encoded: encode once and fan packets out (default); "
                             "mediarelay: aiortc's MediaRelay, one encoder per site (baseline)")
    parser.add_argument("--forward", choices=("auto", "off"),
                        default=os.environ.get("YUANJIAO_FORWARD", "auto"),
                        help="auto: forward the publisher's own frames when they suit the "
                             "sites (forward mode); off: always decode and encode once")
    parser.add_argument("--fast-send", action=argparse.BooleanOptionalAction,
                        default=os.environ.get("YUANJIAO_FAST_SEND", "1").lower()
                        in ("1", "true", "yes", "on"),
                        help="the sites' fast send path (video/fastsend.py; on by default; "
                             "YUANJIAO_FAST_SEND=0 keeps aiortc's sender loop)")
    parser.add_argument("--log-level", default=os.environ.get("YUANJIAO_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.secret:
        parser.error("a shared secret is required (--secret or YUANJIAO_MEDIA_NODE_SECRET)")
    ice = json.loads(os.environ.get("YUANJIAO_ICE_SERVERS") or "[]")
    serve(args.host, args.port, args.secret, ice_servers=ice, relay_mode=args.relay,
          forward=args.forward, fast_send=args.fast_send)


if __name__ == "__main__":
    main()
