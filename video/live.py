"""The live state of an occurrence's broadcast as pages and sockets receive it.

Below the views and the socket handlers, which both send it (`video.events` must not
import `video.views`).
"""

from __future__ import annotations

from typing import Any

from extensions import db
from video import janus_views, media, service


def live_payload(occurrence_id: int, *, with_resources: bool = False) -> dict[str, Any]:
    """The state of an occurrence's broadcast, its connected sites and its figures
    (resource ids only `with_resources`: for those who manage the occurrence)."""
    stats = media.media_stats(occurrence_id) if media.media_enabled() else None
    state = service.live_state(db.session, occurrence_id, (stats or {}).get("state"))
    sites = []
    if state == "live":
        sites = [{**s, "served_by": "origin"}
                 for s in media.public_sites(stats, with_resources=with_resources,
                                             with_names=with_resources)]
        sites += janus_views.served_sites(occurrence_id)
    return {"occurrence_id": occurrence_id, "state": state, "sites": sites,
            "stats": media.public_stats(stats) if state == "live" else {}}
