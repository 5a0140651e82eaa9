"""HLS over HTTP: ``GET /live/<occ>/hls/index.m3u8`` and its segments (video.hls writes them).

For whoever may watch the occurrence (an expected member, by login cookie or bearer token;
organizers in scope, the trainer, admins). The app sends the files itself, or, behind
nginx (`YUANJIAO_HLS_ACCEL`, deploy/nginx.conf.in), answers with X-Accel-Redirect and
nginx sends them: the app only decides who may.

A member's segment requests are his heartbeat to the media side: each one renews his HLS
session (signal `video.service.hls_fetched`, heard by attendance.watching; it lapses
YUANJIAO_HLS_SESSION_SECONDS after the last segment), so his `viewer:join` /
`viewer:heartbeat` count as a WHEP viewer's do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory

from core.api import SiteScreen, current_principal
from extensions import db
from sessions import service as sessions_service
from video import service
from video.errors import DomainError, NotLive
from video.hls import FILE_NAME, occurrence_dir

pages = Blueprint("video_hls", __name__)


@pages.errorhandler(DomainError)
def _refused(error: DomainError):
    """Players (hls.js, Safari) get the API's JSON errors; not live says when to retry."""
    db.session.rollback()
    response = jsonify(error.to_dict())
    response.status_code = error.status
    if isinstance(error, NotLive):
        response.headers["Retry-After"] = "2"
    return response


def hls_dir(app: Flask | None = None) -> str:
    return (app or current_app).config["YUANJIAO_HLS_DIR"]


def publish_options(occurrence_id: int) -> dict[str, Any]:
    """What WHIP passes to the engine so that it packages HLS for this occurrence."""
    return {"hls_dir": occurrence_dir(hls_dir(), occurrence_id)}


@pages.get("/live/<int:occurrence_id>/hls/<name>")
def hls_file(occurrence_id: int, name: str):
    """The playlist and its segments, for those who may watch the occurrence."""
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    service.require_watch(db.session, principal, occurrence)
    db.session.rollback()
    directory = Path(occurrence_dir(hls_dir(), occurrence_id))
    if not FILE_NAME.fullmatch(name) or not (directory / name).is_file():
        raise NotLive("直播尚未开始，请稍候重试", details={"retry_after": 2})
    playlist = name.endswith(".m3u8")
    member_id = getattr(principal, "member_id", None)
    if not playlist and member_id and not isinstance(principal, SiteScreen):
        service.hls_fetched.send(occurrence_id, member_id=int(member_id), lasts=float(
            current_app.config["YUANJIAO_HLS_SESSION_SECONDS"]))
    mimetype = "application/vnd.apple.mpegurl" if playlist else "video/mp2t"
    if current_app.config.get("YUANJIAO_HLS_ACCEL"):
        response = Response(mimetype=mimetype)
        response.headers["X-Accel-Redirect"] = f"/_hls/{occurrence_id}/{name}"
    else:
        response = send_from_directory(directory, name, mimetype=mimetype,
                                       max_age=0 if playlist else 60)
    # The playlist changes every segment; a segment never does.
    response.headers["Cache-Control"] = "no-cache" if playlist else "private, max-age=60"
    return response


def init_app(app: Flask) -> None:
    os.makedirs(hls_dir(app), exist_ok=True)
    app.register_blueprint(pages)
