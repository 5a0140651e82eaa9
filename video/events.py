"""Socket.IO namespace /live: live pages join the room of their occurrence."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_socketio import join_room

from core import policy
from core.sockets import payload_id, payload_object, socket_principal
from extensions import db, socketio
from sessions import service as sessions_service
from video.live import live_payload
from video.media import NAMESPACE, manage_room, room


def init_app(app: Flask) -> None:
    """Register the handlers on this app's Socket.IO server.

    Not with decorators at import: a decorator binds to the server that exists when the
    module is first imported, so a second app (every test builds one) would have none.
    """
    socketio.on_event("join", join, namespace=NAMESPACE)


def join(data: Any = None) -> dict[str, Any]:
    """A live page (trainer, site screen, viewer) joins `live:<occurrence_id>`.

    It then receives `state` events ({occurrence_id, state, sites, stats}) whenever the
    broadcast starts or ends or a site joins or leaves. Site screens pass their token.
    """
    data = payload_object(data)
    principal = socket_principal({"token": data.get("token")})
    occurrence = sessions_service.get_occurrence(db.session, payload_id(data, "occurrence_id"))
    policy.require(principal, "live.watch", occurrence)
    manages = policy.can(principal, "live.manage", occurrence)
    # Managers get names and handles; everyone else the same events without them.
    join_room(manage_room(occurrence.id) if manages else room(occurrence.id))
    return {"ok": True, **live_payload(occurrence.id, with_resources=manages)}
