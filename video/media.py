"""The media runtime of the web app: which engine serves an occurrence, and its events.

`YUANJIAO_MEDIA = "inprocess"` starts the aiortc engine lazily on first use, in this
process; a non-empty `YUANJIAO_MEDIA_NODES` sends every call to a `python -m video.node`
process over HTTP (the node is chosen by occurrence id); `"off"` answers 503.

Engine events (publisher connected, site joined or left, broadcast ended with its
recording) arrive on the engine's loop thread or a node poller thread; they are put on a
queue that one worker thread drains inside an app context: it updates the database,
commits, sends the `video.service` signals and emits Socket.IO messages to the room
`live:<occurrence_id>` on namespace `/live`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import requests
from flask import Flask, current_app

from core.appctx import app_object
from core.rediskeys import redis_prefix
from core.types import utcnow
from extensions import db, socketio
from video import service
from video.engine import MediaEngine, MediaError
from video.errors import MediaUnavailable

log = logging.getLogger(__name__)

EXTENSION = "yuanjiao_media"
NAMESPACE = "/live"


def room(occurrence_id: int) -> str:
    return f"live:{occurrence_id}"


#: A media node's /health answer is trusted this long; a check waits this long at most.
NODE_HEALTH_CACHE_SECONDS = 1.0
NODE_HEALTH_TIMEOUT = 0.5
#: A node's event log is asked again this soon after it did not answer.
NODE_RETRY_SECONDS = 0.5


class NodeClient:
    """The engine's interface over HTTP, against one or more `video.node` processes."""

    def __init__(self, urls: list[str], secret: str, on_event: Any,
                 redis_url: str | None = None, prefix: str = "yuanjiao") -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.secret = secret
        self.on_event = on_event
        self.http = requests.Session()
        self._pollers: list[threading.Thread] = []
        self._stop = threading.Event()
        #: Node index -> (checked at, answered): /health, cached NODE_HEALTH_CACHE_SECONDS.
        self._health: dict[int, tuple[float, bool]] = {}
        #: Occurrence -> the node its broadcast was published on (in Redis too, so that
        #: every web process sends its viewers there after a failover).
        self._placed: dict[int, int] = {}
        #: Node index -> occurrences live there, from its event log (a lost node's pages
        #: are told at once).
        self._live_on: dict[int, set[int]] = {}
        self._lock = threading.Lock()
        self.prefix = prefix
        self.redis = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=1,
                                              socket_connect_timeout=1)

    def start(self) -> NodeClient:
        for index, url in enumerate(self.urls):
            thread = threading.Thread(target=self._poll, args=(url,), daemon=True,
                                      name=f"media-node-events-{index}")
            thread.start()
            self._pollers.append(thread)
        return self

    def shutdown(self) -> None:
        self._stop.set()

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"X-Yuanjiao-Node-Secret": self.secret, **extra}

    def healthy(self, index: int) -> bool:
        checked, ok = self._health.get(index, (0.0, False))
        if time.monotonic() - checked < NODE_HEALTH_CACHE_SECONDS:
            return ok
        try:
            ok = self.http.get(f"{self.urls[index]}/health", headers=self._headers(),
                               timeout=NODE_HEALTH_TIMEOUT).ok
        except requests.RequestException:
            ok = False
        self._health[index] = (time.monotonic(), ok)
        return ok

    def _placement_key(self, occurrence_id: int) -> str:
        return f"{self.prefix}:media-node:{int(occurrence_id)}"

    def _placement(self, occurrence_id: int) -> int | None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                raw = self.redis.get(self._placement_key(occurrence_id))
                if raw is not None and 0 <= int(raw) < len(self.urls):
                    return int(raw)
        return self._placed.get(int(occurrence_id))

    def _place(self, occurrence_id: int, index: int) -> None:
        self._placed[int(occurrence_id)] = index
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.set(self._placement_key(occurrence_id), index, ex=24 * 3600)

    def node_for(self, occurrence_id: int) -> tuple[int, str]:
        """The node of an occurrence's broadcast: where it was published, else its own
        (occurrence id modulo the nodes)."""
        index = self._placement(occurrence_id)
        if index is None:
            index = int(occurrence_id) % len(self.urls)
        return index, self.urls[index]

    def _node_to_publish(self, occurrence_id: int) -> int:
        """Where a (re)publish goes: the occurrence's node while it answers, else the next
        one that does (a killed node's lecture moves to another as soon as the trainer's
        page publishes again)."""
        current, _ = self.node_for(occurrence_id)
        n = len(self.urls)
        for index in [current, *((current + i) % n for i in range(1, n))]:
            if n == 1 or self.healthy(index):
                return index
        return current

    def _raise(self, response: requests.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "node_error", "message": response.text[:200]}
        raise MediaError(body.get("error", "node_error"), body.get("message", ""))

    def _offer(self, path: str, occurrence_id: int, sdp: str, meta: dict[str, Any]
               ) -> dict[str, Any]:
        if path == "whip":
            index = self._node_to_publish(occurrence_id)
            url = self.urls[index]
        else:
            index, url = self.node_for(occurrence_id)
        response = self.http.post(
            f"{url}/{path}/{int(occurrence_id)}", data=sdp.encode(), timeout=30,
            headers=self._headers(**{"Content-Type": "application/sdp",
                                     "X-Yuanjiao-Meta": json.dumps(meta)}))
        if response.status_code != 201:
            self._raise(response)
        if path == "whip":
            self._place(occurrence_id, index)
        result = json.loads(response.headers.get("X-Yuanjiao-Result", "{}"))
        result["answer"] = response.text
        result["resource_id"] = f"n{index}.{result['resource_id']}"
        return result

    def publish(self, occurrence_id: int, offer_sdp: str,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._offer("whip", occurrence_id, offer_sdp, options or {})

    def subscribe(self, occurrence_id: int, offer_sdp: str,
                  subscriber_info: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._offer("whep", occurrence_id, offer_sdp, subscriber_info or {})

    def _resource_url(self, resource_id: str) -> str | None:
        prefix, _, rid = resource_id.partition(".")
        if not prefix.startswith("n") or not rid.isalnum():
            return None
        try:
            return f"{self.urls[int(prefix[1:])]}/resources/{rid}"
        except (ValueError, IndexError):
            return None

    def stop(self, resource_id: str, occurrence_id: int | None = None) -> dict[str, Any] | None:
        url = self._resource_url(resource_id)
        if url is None:
            return None
        params = {} if occurrence_id is None else {"occurrence": int(occurrence_id)}
        response = self.http.delete(url, params=params, headers=self._headers(), timeout=30)
        return response.json() if response.status_code == 200 else None

    def pin(self, resource_id: str, layer: str | None) -> bool:
        url = self._resource_url(resource_id)
        if url is None:
            return False
        response = self.http.post(f"{url}/layer", json={"layer": layer},
                                  headers=self._headers(), timeout=10)
        if response.status_code >= 500:
            self._raise(response)
        return response.status_code == 200

    def describe(self, resource_id: str) -> dict[str, Any] | None:
        url = self._resource_url(resource_id)
        if url is None:
            return None
        response = self.http.get(url, headers=self._headers(), timeout=10)
        return response.json() if response.status_code == 200 else None

    def trickle(self, resource_id: str, fragment: str,
                if_match: list[str] | None = None) -> dict[str, Any] | None:
        prefix, _, rid = resource_id.partition(".")
        try:
            url = self.urls[int(prefix[1:])]
        except (ValueError, IndexError):
            return None
        headers = self._headers(**{"Content-Type": "application/trickle-ice-sdpfrag"})
        if if_match is not None:
            headers["If-Match"] = ", ".join(if_match)
        response = self.http.patch(f"{url}/resources/{rid}", data=fragment.encode(),
                                   headers=headers, timeout=30)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._raise(response)
        return response.json()

    def end_broadcast(self, occurrence_id: int) -> bool:
        _, url = self.node_for(occurrence_id)
        response = self.http.post(f"{url}/end/{int(occurrence_id)}", headers=self._headers(),
                                  timeout=30)
        return bool(response.ok and response.json().get("ended"))

    def stats(self, occurrence_id: int) -> dict[str, Any]:
        index, url = self.node_for(occurrence_id)
        response = self.http.get(f"{url}/stats/{int(occurrence_id)}", headers=self._headers(),
                                 timeout=10)
        if not response.ok:
            self._raise(response)
        stats = response.json()
        # The resource ids the app hands out carry their node ("n0."): the same here, so a
        # manager can DELETE or pin what the live API lists.
        for site in stats.get("sites", []):
            if site.get("resource_id") and "." not in site["resource_id"]:
                site["resource_id"] = f"n{index}.{site['resource_id']}"
        return stats

    def record(self, occurrence_id: int, path: str | None) -> bool:
        _, url = self.node_for(occurrence_id)
        response = self.http.post(f"{url}/record/{int(occurrence_id)}", json={"path": path},
                                  headers=self._headers(), timeout=10)
        return bool(response.ok and response.json().get("ok"))

    def _poll(self, url: str) -> None:
        """Long-poll a node's event log and hand the events to the worker. A node that
        stops answering (killed) has its live occurrences reported as `media_lost`; one
        that comes back (restarted) is read from its new log's start."""
        index = self.urls.index(url)
        after, boot = None, None
        while not self._stop.is_set():
            try:
                params: dict[str, Any] = {"wait": 20}
                if after is not None:
                    params["after"] = after
                if boot is not None:
                    params["boot"] = boot  # a restarted node answers at once
                response = requests.get(f"{url}/events", params=params,
                                        headers=self._headers(), timeout=30)
                response.raise_for_status()
                body = response.json()
                if boot is not None and body.get("boot") != boot:
                    boot, after = body.get("boot"), 0  # restarted: its new log from the start
                    continue
                boot = body.get("boot")
                if after is not None:
                    for event in body["events"]:
                        self._track(index, event)
                        self.on_event(event)
                after = body["last"]
            except (requests.RequestException, ValueError, KeyError) as exc:
                if self._health.get(index, (0.0, True))[1]:  # said once, not every retry
                    log.warning("media node %s unreachable: %s", url, exc)
                self._health[index] = (time.monotonic(), False)
                self._lost(index)
                self._stop.wait(NODE_RETRY_SECONDS)

    def _track(self, index: int, event: dict[str, Any]) -> None:
        kind, occurrence_id = event.get("type"), event.get("occurrence_id")
        if not isinstance(occurrence_id, int):
            return
        with self._lock:
            live = self._live_on.setdefault(index, set())
            if kind == "broadcast_started":
                live.add(occurrence_id)
            elif kind == "broadcast_ended":
                live.discard(occurrence_id)

    def _lost(self, index: int) -> None:
        with self._lock:
            lost = self._live_on.pop(index, set())
        for occurrence_id in sorted(lost):
            self.on_event({"type": "media_lost", "occurrence_id": occurrence_id,
                           "node": index})


class MediaRuntime:
    """Per app: the backend (engine or nodes) and the event worker."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        nodes = app.config.get("YUANJIAO_MEDIA_NODES") or []
        if nodes:
            secret = app.config["YUANJIAO_MEDIA_NODE_SECRET"]
            self.backend: Any = NodeClient(
                list(nodes), secret, self.events.put, app.config.get("REDIS_URL"),
                redis_prefix(app.config)).start()
        else:
            self.backend = MediaEngine(ice_servers=app.config.get("YUANJIAO_ICE_SERVERS") or [],
                                       on_event=self.events.put,
                                       forward=app.config.get("YUANJIAO_FORWARD", "auto"),
                                       fast_send=bool(app.config.get("YUANJIAO_FAST_SEND", True))
                                       ).start()
        self.worker = threading.Thread(target=self._work, name="media-events", daemon=True)
        self.worker.start()

    def shutdown(self) -> None:
        self.backend.shutdown()
        self.events.put(None)
        self.worker.join(10)

    def _work(self) -> None:
        while True:
            event = self.events.get()
            if event is None:
                self.events.task_done()
                return
            with self.app.app_context():
                try:
                    handle_event(event)
                except Exception:
                    db.session.rollback()
                    log.exception("media event %s failed", event.get("type"))
                finally:
                    db.session.remove()
                    self.events.task_done()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until the worker has handled every queued event (tests)."""
        deadline = time.monotonic() + timeout
        while self.events.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)


def media_enabled(app: Flask | None = None) -> bool:
    app = app or current_app
    return bool(app.config.get("YUANJIAO_MEDIA_NODES")) or app.config.get(
        "YUANJIAO_MEDIA", "inprocess") == "inprocess"


def runtime(app: Flask | None = None) -> MediaRuntime:
    """The app's media runtime, started on first use; MediaUnavailable when media is off."""
    app = app or app_object()
    if not media_enabled(app):
        raise MediaUnavailable("本服务未启用直播媒体服务（YUANJIAO_MEDIA=off）")
    existing = app.extensions.get(EXTENSION)
    if existing is None:
        with _start_lock:
            existing = app.extensions.get(EXTENSION)
            if existing is None:
                existing = app.extensions[EXTENSION] = MediaRuntime(app)
    return existing


_start_lock = threading.Lock()


def backend(app: Flask | None = None) -> Any:
    return runtime(app).backend


def started_runtime(app: Flask | None = None) -> MediaRuntime | None:
    """The runtime if it already runs (reading state must not start an engine)."""
    app = app or current_app
    return app.extensions.get(EXTENSION)


def shutdown(app: Flask) -> None:
    existing = app.extensions.pop(EXTENSION, None)
    if existing is not None:
        existing.shutdown()


def media_stats(occurrence_id: int) -> dict[str, Any] | None:
    """Live stats from the engine, or None when it is off or not started."""
    app = app_object()
    rt = runtime(app) if app.config.get("YUANJIAO_MEDIA_NODES") else started_runtime(app)
    if rt is None:
        return None
    try:
        return rt.backend.stats(occurrence_id)
    except (MediaError, requests.RequestException) as exc:
        log.warning("media stats for %s failed: %s", occurrence_id, exc)
        return None


def recordings_dir() -> str:
    return current_app.config.get("YUANJIAO_RECORDINGS_DIR") or str(
        Path(current_app.instance_path) / "recordings")


def public_sites(stats: dict[str, Any] | None, *, with_resources: bool = False,
                 with_names: bool = False) -> list[dict[str, Any]]:
    """The connected subscribers as the pages show them.

    A resource id is the handle that ends a connection, and the names of people watching
    alone are theirs: only those who manage the occurrence get them (`with_resources`,
    `with_names`). Everyone else sees the sites by name and the others as entries
    without a name (a count).
    """
    keys: tuple[str, ...] = (
        "kind", "label", "site_id", "site_name", "state", "joined_at", "first_frame_ms",
        "codec", "layer", "loss", "jitter_ms", "rtt_ms", "estimate_kbps", "pinned")
    if with_names:
        keys = (*keys, "member_id", "member_name", "user_name")
    if with_resources:
        keys = ("resource_id", *keys)
    out = []
    for s in (stats or {}).get("sites", []):
        entry = {k: s.get(k) for k in keys if k in s}
        if not with_names and s.get("kind") != "site":
            entry["label"] = ""
        out.append(entry)
    return out


def manage_room(occurrence_id: int) -> str:
    """The live room of those who manage the occurrence: names and handles included."""
    return f"live:{occurrence_id}:manage"


def public_stats(stats: dict[str, Any] | None) -> dict[str, Any]:
    stats = stats or {}
    keys = ("fps", "bitrate_kbps", "target_bitrate_kbps", "width", "height", "subscribers",
            "publisher_connected", "keyframes", "codecs", "frames_in", "layers", "mode",
            "forward", "recording_state", "recording_error")
    return {k: stats.get(k) for k in keys if k in stats}


def emit_live(occurrence_id: int, state: str, stats: dict[str, Any] | None = None) -> None:
    """Tell the rooms of `live:<id>` the state and the connected sites (any thread): the
    managers' room with resource ids and viewers' names, the others without."""
    edge_sites: list[dict[str, Any]] = []
    if state == "live":
        from video.janus_views import served_sites  # the sites on the Janus edges

        edge_sites = served_sites(occurrence_id)
    for to, full in ((room(occurrence_id), False), (manage_room(occurrence_id), True)):
        sites = [{**s, "served_by": "origin"}
                 for s in public_sites(stats, with_resources=full, with_names=full)]
        socketio.emit("state", {"occurrence_id": occurrence_id, "state": state,
                                "sites": sites + edge_sites, "stats": public_stats(stats)},
                      to=to, namespace=NAMESPACE)


def handle_event(event: dict[str, Any]) -> None:
    """One engine event, on the worker thread inside an app context."""
    kind = event.get("type")
    occurrence_id = int(event["occurrence_id"])
    now = utcnow()
    if kind == "broadcast_started":
        # The WHIP view commits the Recording row right after the engine answers; this
        # event can overtake that commit by a few milliseconds.
        recording = None
        for _ in range(30):
            recording = service.recording_by_path(db.session, occurrence_id,
                                                  recordings_dir(), event.get("record_path"))
            if recording is not None or not event.get("record_path"):
                break
            db.session.rollback()
            time.sleep(0.1)
        db.session.commit()
        service.broadcast_started.send(occurrence_id,
                                       recording_id=recording.id if recording else None)
        emit_live(occurrence_id, "live", media_stats(occurrence_id))
    elif kind == "broadcast_ended":
        recording = service.finish_recording(db.session, recordings_dir(), occurrence_id,
                                             event.get("recording"), now)
        db.session.commit()
        service.broadcast_ended.send(occurrence_id,
                                     recording_id=recording.id if recording else None,
                                     reason=event.get("reason"))
        emit_live(occurrence_id, "ended")
    elif kind in ("subscriber_joined", "subscriber_left"):
        signal = (service.subscriber_joined if kind == "subscriber_joined"
                  else service.subscriber_left)
        signal.send(occurrence_id, info=event.get("info") or {},
                    resource_id=event.get("resource_id"))
        stats = media_stats(occurrence_id)
        state = "live" if stats and stats.get("state") == "live" else None
        if state:
            emit_live(occurrence_id, state, stats)
    elif kind == "recording_failed":  # the disk filled up: tell the trainer's page now
        log.error("occurrence %s: recording stopped (%s); the broadcast goes on",
                  occurrence_id, event.get("error"))
        stats = media_stats(occurrence_id)
        if stats and stats.get("state") == "live":
            emit_live(occurrence_id, "live", stats)
    elif kind == "media_lost":  # its media node is gone: pages reconnect, trainer republishes
        log.error("occurrence %s: media node %s lost", occurrence_id, event.get("node"))
        emit_live(occurrence_id, "interrupted")
    elif kind in ("publisher_connected", "publisher_disconnected"):
        stats = media_stats(occurrence_id)
        if stats and stats.get("state") == "live":
            emit_live(occurrence_id, "live", stats)
