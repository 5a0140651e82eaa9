"""Who is really watching: the live media sessions bound to members watching alone.

A member watching alone counts only while he holds a live media session for that
occurrence (a WHEP connection the media engine reports as connected, bound to him by his
login). The engine's `subscriber_joined` / `subscriber_left` signals (video.service) feed
this registry; every web process receives them (in-process engine, or each process polling
the media nodes' event streams). With REDIS_URL the sessions are kept in Redis
(attendance.presence.RedisMediaSessions), so a process that started polling later, or
was restarted, knows the sessions that connected before.

Heartbeats are coalesced here too: at most one stored per member and occurrence per
`coalesce_seconds` (the rules need a sign of life within the grace period, not every 15 s).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from flask import Flask, current_app

from config import Settings

EXTENSION = "attendance_watching"


class Watching:
    """Per app: (occurrence_id, member_id) -> the media resources he holds; last beats."""

    def __init__(self, shared: Any = None) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[int, int], set[str]] = defaultdict(set)
        self._last_stored: dict[tuple[int, int], float] = {}
        #: With REDIS_URL, the sessions live in Redis for every web process
        #: (attendance.presence.RedisMediaSessions); heartbeat coalescing stays here.
        self.shared = shared

    def joined(self, occurrence_id: int, member_id: int, resource_id: str) -> None:
        if self.shared is not None:
            self.shared.joined(occurrence_id, member_id, resource_id)
            return
        with self._lock:
            self._sessions[(occurrence_id, member_id)].add(resource_id)

    def left(self, occurrence_id: int, member_id: int, resource_id: str) -> None:
        if self.shared is not None:
            self.shared.left(occurrence_id, member_id, resource_id)
            return
        with self._lock:
            held = self._sessions.get((occurrence_id, member_id))
            if held is not None:
                held.discard(resource_id)
                if not held:
                    self._sessions.pop((occurrence_id, member_id), None)

    def holds(self, occurrence_id: int, member_id: int) -> bool:
        if self.shared is not None:
            return self.shared.holds(occurrence_id, member_id)
        with self._lock:
            return bool(self._sessions.get((occurrence_id, member_id)))

    def due(self, occurrence_id: int, member_id: int, every: float) -> bool:
        """True (and remembered) when a heartbeat should be stored now."""
        key, now = (occurrence_id, member_id), time.monotonic()
        with self._lock:
            last = self._last_stored.get(key)
            if last is not None and now - last < every:
                return False
            self._last_stored[key] = now
            return True

    def stored(self, occurrence_id: int, member_id: int) -> None:
        """A join or leave was stored: the next heartbeat counts from it."""
        with self._lock:
            self._last_stored[(occurrence_id, member_id)] = time.monotonic()


def watching(app: Flask | None = None) -> Watching:
    app = app or current_app
    state = app.extensions.get(EXTENSION)
    if state is None:
        from attendance.presence import media_sessions_for

        state = app.extensions.setdefault(EXTENSION, Watching(media_sessions_for(app.config)))
    return state


def coalesce_seconds(config: Settings) -> float:
    """Store a heartbeat at most this often: a minute, or less with a short grace period."""
    grace = float(config.attendance_grace_seconds)
    return max(1.0, min(60.0, grace / 2))


def _member_of(info: dict[str, Any]) -> int | None:
    if info.get("kind") != "member":
        return None
    try:
        return int(info["member_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _on_joined(occurrence_id: Any, info: dict[str, Any] | None = None,
               resource_id: str | None = None, **_: Any) -> None:
    member_id = _member_of(info or {})
    if member_id is not None and resource_id:
        watching().joined(int(occurrence_id), member_id, resource_id)


def _on_left(occurrence_id: Any, info: dict[str, Any] | None = None,
             resource_id: str | None = None, **_: Any) -> None:
    member_id = _member_of(info or {})
    if member_id is not None and resource_id:
        watching().left(int(occurrence_id), member_id, resource_id)


def init_app(app: Flask) -> None:
    """Listen to the media engine's signals (sent inside an app context)."""
    from video import service as video_service

    video_service.subscriber_joined.connect(_on_joined, weak=False)
    video_service.subscriber_left.connect(_on_left, weak=False)
    watching(app)
