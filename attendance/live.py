"""Live updates to Socket.IO rooms, sent after the facts are committed.

Rooms of the ``/attendance`` namespace:

* ``att:<occurrence_id>``: the organizer dashboards (names included);
* ``att:<occurrence_id>:counts``: the trainer's broadcast page (headcounts: the same
  deltas without names, since `broadcast:join` is a view right, not a manage right);
* ``att:<occurrence_id>:site:<site_id>``: a site's screen and operator pages.

Updates are small deltas (one member's new state), never a recomputed snapshot; pages
keep their own counts and ask for a fresh snapshot now and then. They leave each room
together (`attendance:updates`, a list), at most every `WINDOW` seconds: in a roll call
of a whole oil field (1,000 check-ins a second) an organizer's dashboard got 1,000
messages a second and drew its table at each, and every emit crossed Redis to every web
process; now a room gets four messages a second however many check-ins there are.
`site:status` and `attendance:changed` are rare and leave at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, current_app

from attendance.models import AttendanceEvent
from core.coalesce import Coalescer
from extensions import socketio

log = logging.getLogger(__name__)

NAMESPACE = "/attendance"
#: The state an event leaves its member in, for the live pages.
PRESENT_AFTER = {"check_in": True, "qr_check_in": True, "viewer_join": True,
                 "viewer_heartbeat": True, "check_out": False, "viewer_leave": False}


def occurrence_room(occurrence_id: int) -> str:
    return f"att:{occurrence_id}"


def counts_room(occurrence_id: int) -> str:
    return f"att:{occurrence_id}:counts"


def site_room(occurrence_id: int, site_id: int) -> str:
    return f"att:{occurrence_id}:site:{site_id}"


def event_dict(event: AttendanceEvent) -> dict[str, Any]:
    """An event as the socket acks and the API show it."""
    return {
        "id": event.id, "event_id": event.event_id, "occurrence_id": event.occurrence_id,
        "type": event.type, "source": event.source, "member_id": event.member_id,
        "site_id": event.site_id, "server_time": event.server_time.isoformat(),
        "client_time": event.client_time.isoformat() if event.client_time else None,
    }


#: Updates to a room wait at most this long (seconds) for others to leave with them.
WINDOW = 0.25


class Outbox:
    """A process's updates waiting for their room's next message (see the module).

    Each room's list keeps the order the facts were published in; one background task
    (`core.coalesce`) sends every room's list each WINDOW."""

    def __init__(self, server: Any, window: float = WINDOW) -> None:
        #: The app's own Socket.IO server (not the extension's latest: every test builds
        #: an app, and a late flush of an earlier one must not reach the next one's rooms).
        self.server = server
        self._rooms: Coalescer[dict[str, tuple[int, list[dict[str, Any]]]]] = Coalescer(
            server, window, dict, self._send)

    def put(self, room: str, occurrence_id: int, update: dict[str, Any]) -> None:
        self._rooms.add(lambda rooms: rooms.setdefault(room, (occurrence_id, []))[1]
                        .append(update))

    def flush(self) -> int:
        """Send every room's waiting updates now; how many rooms got a message."""
        return len(self._rooms.flush())

    def _send(self, rooms: dict[str, tuple[int, list[dict[str, Any]]]]) -> None:
        for room, (occurrence_id, updates) in rooms.items():
            try:
                self.server.emit("attendance:updates", {"occurrence_id": occurrence_id,
                                                        "updates": updates},
                                 namespace=NAMESPACE, to=room)
            except Exception:  # a page asks for a snapshot on its next re-join
                log.exception("could not send %d live updates to %s", len(updates), room)


def init_app(app: Flask) -> None:
    """The app's outbox, on the app's Socket.IO server (made by `socketio.init_app`)."""
    app.extensions["attendance_outbox"] = Outbox(socketio.server)
    app.extensions["attendance_snapshots"] = SharedSnapshots()


def outbox(app: Flask | None = None) -> Outbox:
    """This app's outbox (one per app: tests build many apps in one process)."""
    return (app or current_app).extensions["attendance_outbox"]


def publish_events(events: Iterable[AttendanceEvent], names: dict[int, str] | None = None
                   ) -> None:
    """Tell the rooms about committed member events (one delta per event, sent with the
    room's others within WINDOW)."""
    box = outbox()
    for event in events:
        if event.member_id is None or event.type not in PRESENT_AFTER:
            continue
        occ = event.occurrence_id
        update = {"occurrence_id": occ, "member_id": event.member_id,
                  "site_id": event.site_id, "type": event.type,
                  "present": PRESENT_AFTER[event.type], "at": event.at.isoformat()}
        box.put(counts_room(occ), occ, update)
        if names and event.member_id in names:
            update = {**update, "name": names[event.member_id]}
        box.put(occurrence_room(occ), occ, update)
        if event.site_id is not None:
            box.put(site_room(occ, event.site_id), occ, update)


def publish_site_status(occurrence_id: int, site_id: int, online: bool) -> None:
    socketio.emit("site:status", {"occurrence_id": occurrence_id, "site_id": site_id,
                                  "online": online},
                  namespace=NAMESPACE,
                  to=[occurrence_room(occurrence_id), counts_room(occurrence_id)])


def publish_changed(occurrence_id: int, what: str) -> None:
    """Something beyond one member changed (a correction, a lock): pages refresh."""
    socketio.emit("attendance:changed", {"occurrence_id": occurrence_id, "what": what},
                  namespace=NAMESPACE,
                  to=[occurrence_room(occurrence_id), counts_room(occurrence_id)])


#: How long the first page asking for an occurrence's snapshot waits for others to ask
#: too (seconds), before the one computation they share starts.
GATHER = 0.05


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedSnapshots:
    """Pages that ask for an occurrence's snapshot at about the same time share one
    computation, which starts after every one of them asked.

    When a lecture starts, a hundred room screens join within a second or two, and each
    asked for the whole occurrence's snapshot (every expected member, every event so far):
    a hundred computations at once held the database pool's connections for seconds, and
    screens behind them waited past its timeout (bench/stack.py, 10,000 connections). A
    page joins its rooms before it asks, and the computation it shares starts after it
    asked, so every update it does not see in the snapshot reaches it in the rooms.
    """

    def __init__(self, gather: float = GATHER) -> None:
        self.gather = gather
        self._lock = threading.Lock()
        #: Flights not started yet: a page asking now may board.
        self._boarding: dict[Any, _Flight] = {}
        self.computed = 0

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The result of a `compute` started after this call began (shared; read only)."""
        with self._lock:
            boarding = self._boarding.get(key)
            leader = boarding is None
            flight = self._boarding[key] = _Flight() if boarding is None else boarding
        if leader:
            time.sleep(self.gather)
            with self._lock:
                del self._boarding[key]  # from now on, askers take the next flight
            try:
                flight.value = compute()
                self.computed += 1
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                flight.done.set()
            return flight.value
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.value


def shared_snapshots(app: Flask | None = None) -> SharedSnapshots:
    """This app's shared snapshots (made by `init_app`)."""
    return (app or current_app).extensions["attendance_snapshots"]
