"""A site page watching from a Janus edge: our signalling in front of Janus's Streaming API.

    POST   /live/<occ>/play?site=<id>          -> {"via": "origin"} or
                                                  {"via": "edge", "edge", "token", "offer"}
    POST   /live/<occ>/edge/<token>/answer     (application/sdp: the page's answer)
    POST   /live/<occ>/edge/<token>/keepalive  (every 20 s; 404 when the session is gone)
    DELETE /live/<occ>/edge/<token>

Who may call: as WHEP (a site screen's token, or a login that may watch; cookie callers
send the CSRF header). The origin keeps sites up to YUANJIAO_ORIGIN_MAX_SITES; past that
a site gets the healthy edge with the fewest viewers (video.janus.Edges.allocate), the
edge's mountpoint is created if missing and the origin sends it RTP; Janus then offers.
A dead edge's pages lose their connection, ask /play again and get another edge.

Members watching alone are served by edges the same way once the origin is full. Either
kind's edge session is a media session like a WHEP one: the page's answer accepted by
Janus sends `subscriber_joined`, a hang-up, a keepalive Janus refuses, or a session not
kept alive for SESSION_TTL_SECONDS sends `subscriber_left` (video.service), so a member's
heartbeats count while he watches from an edge, exactly as from the origin.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import requests
from flask import Blueprint, Flask, Response, jsonify, request

from core import policy
from core.api import SiteScreen, current_principal
from core.appctx import app_object
from core.rediskeys import redis_prefix
from extensions import csrf, db
from sessions import service as sessions_service
from video import janus, media, service
from video.errors import BadSdp, DomainError, MediaUnavailable, NotFound, NotLive

EXTENSION = "video_janus_edges"
KEEPALIVE_SECONDS = 20

log = logging.getLogger(__name__)

pages = Blueprint("video_janus", __name__)


def edges(app: Flask | None = None) -> janus.Edges:
    app = app or app_object()
    state = app.extensions.get(EXTENSION)
    if state is None:
        state = app.extensions.setdefault(EXTENSION, janus.Edges(
            app.config.get("YUANJIAO_JANUS_EDGES") or [],
            app.config["YUANJIAO_JANUS_SECRET"],
            app.config["YUANJIAO_JANUS_ADMIN_KEY"],
            int(app.config["YUANJIAO_ORIGIN_MAX_SITES"]),
            app.config.get("REDIS_URL"), redis_prefix(app.config)))
    return state


@pages.errorhandler(DomainError)
def _refused(error: DomainError):
    db.session.rollback()
    response = jsonify(error.to_dict())
    response.status_code = error.status
    if isinstance(error, NotLive | MediaUnavailable):
        response.headers["Retry-After"] = str(error.details.get("retry_after", 3))
    return response


def _origin_sites(stats: dict[str, Any] | None) -> int:
    return sum(1 for s in (stats or {}).get("sites", []) if s.get("kind") == "site")


@pages.post("/live/<int:occurrence_id>/play")
def play(occurrence_id: int):
    """Where this page watches from: the origin (WHEP as before) or an edge (its offer)."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    policy.require(principal, "live.watch", occurrence)
    site_id = request.args.get("site", type=int)
    info = service.subscriber_info(db.session, principal, site_id)
    db.session.rollback()
    all_edges = edges()
    if not all_edges or info.get("kind") not in ("site", "member") \
            or not media.media_enabled():
        return jsonify({"via": "origin"})
    stats = media.media_stats(occurrence_id)
    if (stats or {}).get("state") != "live":
        # Not "via origin": the page would open WHEP, and were the lecture live by then the
        # origin would serve a site the edges should. The page retries /play.
        raise NotLive("直播尚未开始，请稍候", details={"retry_after": 3})
    origin_sites = _origin_sites(stats)
    if origin_sites < all_edges.origin_max_sites:
        return jsonify({"via": "origin"})  # the origin has room
    edge = all_edges.allocate(occurrence_id, origin_sites)
    if edge is None:
        # The origin is at its cap and no edge answers now: the page asks again shortly
        # (an edge restarting, or a slow answer), it never overloads the origin.
        raise MediaUnavailable("转发节点暂不可用，正在重试", code="edges_unavailable",
                               details={"retry_after": 2})
    try:
        mount = edge.mountpoint(occurrence_id)
        janus.origin_forward(media.backend(), occurrence_id, {
            "edge": edge.name, "host": mount["host"], "video_port": mount["video_port"],
            "audio_port": mount["audio_port"], "video_rtcp_port": mount["video_rtcp_port"]})
        watch = edge.watch(occurrence_id)
    except Exception as exc:  # any failure to set the edge up: the page asks again shortly
        log.warning("edge %s could not take a viewer of occurrence %s: %r", edge.name,
                    occurrence_id, exc)
        raise MediaUnavailable(f"转发节点不可用：{exc}", code="edges_unavailable",
                               details={"retry_after": 2}) from exc
    token = uuid.uuid4().hex
    all_edges.sessions.put(token, {
        "occurrence_id": occurrence_id, "site_id": info.get("site_id"),
        "site_name": info.get("site_name"), "label": info.get("label"),
        "edge": edge.name, "session": watch["session"], "handle": watch["handle"],
        "joined_at": time.time(), "token": token, "info": info,
        "screen": isinstance(principal, SiteScreen)})
    return jsonify({"via": "edge", "edge": edge.name, "token": token,
                    "offer": watch["offer"], "keepalive_seconds": KEEPALIVE_SECONDS,
                    "location": f"/live/{occurrence_id}/edge/{token}"})


def _session(occurrence_id: int, token: str) -> tuple[dict[str, Any], janus.JanusEdge]:
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    policy.require(current_principal(), "live.watch", occurrence)
    db.session.rollback()
    entry = edges().sessions.get(occurrence_id, token)
    edge = edges().by_name(entry["edge"]) if entry else None
    if entry is None or edge is None:
        raise NotFound("该转发会话不存在或已结束", code="edge_session_gone")
    return entry, edge


@pages.post("/live/<int:occurrence_id>/edge/<token>/answer")
def answer(occurrence_id: int, token: str):
    entry, edge = _session(occurrence_id, token)
    sdp = request.get_data(as_text=True)
    if request.mimetype != "application/sdp" or not sdp.startswith("v=0"):
        raise BadSdp("SDP 无效：需要 application/sdp 应答")
    try:
        edge.start(entry["session"], entry["handle"], sdp)
    except (requests.RequestException, janus.JanusError, ValueError) as exc:
        raise MediaUnavailable(f"转发节点不可用：{exc}") from exc
    _media_session(service.subscriber_joined, occurrence_id, entry)
    _tell_pages(occurrence_id)
    return Response(status=204)


def _resource_id(entry: dict[str, Any]) -> str:
    return f"edge:{entry['edge']}:{entry['session']}"


def _media_session(signal: Any, occurrence_id: int, entry: dict[str, Any]) -> None:
    """An edge session joined or left, told as the engine tells a WHEP one."""
    signal.send(occurrence_id, info=entry.get("info") or {}, resource_id=_resource_id(entry))


def _drop(occurrence_id: int, token: str) -> dict[str, Any] | None:
    entry = edges().sessions.remove(occurrence_id, token)
    if entry is not None:
        _media_session(service.subscriber_left, occurrence_id, entry)
    return entry


def expire(occurrence_id: int) -> int:
    """Forget the occurrence's edge sessions nobody kept alive (the page vanished without
    hanging up); each one leaves. How many."""
    gone = edges().sessions.stale(occurrence_id)
    for entry in gone:
        if entry.get("token"):
            _drop(occurrence_id, entry["token"])
    return len(gone)


def _tell_pages(occurrence_id: int) -> None:
    """The trainer's and organizers' pages list the sites: one joined or left an edge."""
    media.emit_live(occurrence_id, "live", media.media_stats(occurrence_id))


@pages.post("/live/<int:occurrence_id>/edge/<token>/keepalive")
def keepalive(occurrence_id: int, token: str):
    entry, edge = _session(occurrence_id, token)
    if not edge.keepalive(entry["session"]):
        _drop(occurrence_id, token)
        raise NotFound("该转发会话不存在或已结束", code="edge_session_gone")
    edges().sessions.touch(occurrence_id, token)
    return jsonify({"ok": True})


@pages.delete("/live/<int:occurrence_id>/edge/<token>")
def hang_up(occurrence_id: int, token: str):
    entry, edge = _session(occurrence_id, token)
    _drop(occurrence_id, token)
    edge.close(entry["session"])
    _tell_pages(occurrence_id)
    return Response(status=204)


def served_sites(occurrence_id: int) -> list[dict[str, Any]]:
    """The sites watching from the edges, as the live API lists sites (`served_by`)."""
    app = app_object()
    if not app.config.get("YUANJIAO_JANUS_EDGES"):
        return []
    expire(occurrence_id)
    return [{"resource_id": _resource_id(e), "kind": (e.get("info") or {}).get("kind", "site"),
             "label": e.get("label") or "", "site_id": e.get("site_id"),
             "site_name": e.get("site_name") or "", "state": "connected",
             "joined_at": e.get("joined_at"), "served_by": e["edge"]}
            for e in edges(app).sessions.live(occurrence_id)]


def init_app(app: Flask) -> None:
    app.register_blueprint(pages)
    csrf.exempt(pages)  # cookie callers are checked by current_principal()
