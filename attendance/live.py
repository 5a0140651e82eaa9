"""Live updates to Socket.IO rooms, sent after the facts are committed.

Rooms of the ``/attendance`` namespace:

* ``att:<occurrence_id>``: the organizer dashboards (names included);
* ``att:<occurrence_id>:counts``: the trainer's broadcast page (headcounts: the same
  deltas without names, since `broadcast:join` is a view right, not a manage right);
* ``att:<occurrence_id>:site:<site_id>``: a site's screen and operator pages.

Updates are small deltas (one member's new state), so that a burst of check-ins costs
the server one emit per event, never a recomputed snapshot; pages keep their own counts
and ask for a fresh snapshot now and then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attendance.models import AttendanceEvent
from extensions import socketio

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


def publish_events(events: Iterable[AttendanceEvent], names: dict[int, str] | None = None
                   ) -> None:
    """Tell the rooms about committed member events (one delta per event)."""
    for event in events:
        if event.member_id is None or event.type not in PRESENT_AFTER:
            continue
        update = {"occurrence_id": event.occurrence_id, "member_id": event.member_id,
                  "site_id": event.site_id, "type": event.type,
                  "present": PRESENT_AFTER[event.type], "at": event.at.isoformat()}
        socketio.emit("attendance:update", update, namespace=NAMESPACE,
                      to=counts_room(event.occurrence_id))
        if names and event.member_id in names:
            update = {**update, "name": names[event.member_id]}
        rooms = [occurrence_room(event.occurrence_id)]
        if event.site_id is not None:
            rooms.append(site_room(event.occurrence_id, event.site_id))
        # One emit to both rooms: the packet is encoded once, a member of both gets one.
        socketio.emit("attendance:update", update, namespace=NAMESPACE, to=rooms)


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
