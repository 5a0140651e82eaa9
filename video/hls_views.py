"""HLS over HTTP: ``GET /live/<occ>/hls/index.m3u8`` and its segments (video.hls writes them).

For whoever may watch the occurrence (an expected member, by login cookie or bearer token;
organizers in scope, the trainer, admins). The app sends the files itself, or, behind
nginx (`YUANJIAO_HLS_ACCEL`, deploy/nginx.conf.in), answers with X-Accel-Redirect and
nginx sends them: the app only decides who may (remembered per credential for
YUANJIAO_ATTENDANCE_AUTH_TTL seconds: a revoked token or a logout stops the files that
much later, as it stops a socket's rights).

A member's segment requests are his heartbeat to the media side: each one renews his HLS
session (signal `video.service.hls_fetched`, heard by attendance.watching; it lapses
YUANJIAO_HLS_SESSION_SECONDS after the last segment), so his `viewer:join` /
`viewer:heartbeat` count as a WHEP viewer's do.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    request,
    send_from_directory,
)

from accounts.service import credentials_ended
from core import policy
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


class Grants:
    """Who may fetch an occurrence's HLS files, remembered per credential for
    YUANJIAO_ATTENDANCE_AUTH_TTL seconds (as the sockets re-check a site operator): a
    viewer asks twice a second, and checking his token and the roster each time cost about
    eight queries per request. (credential digest, occurrence) -> (until, member id, user
    id). A user's logout, password change or revoked token forgets his grants at once
    (`accounts.service.credentials_ended`; other processes within the TTL)."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[tuple[str, int], tuple[float, int | None, int | None]] = {}

    def get(self, key: tuple[str, int]) -> tuple[bool, int | None]:
        with self._lock:
            until, member_id, _user = self._grants.get(key, (0.0, None, None))
        return until > time.monotonic(), member_id

    def put(self, key: tuple[str, int], member_id: int | None, ttl: float,
            user_id: int | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._grants) >= self.LIMIT:
                self._grants = {k: v for k, v in self._grants.items() if v[0] > now}
            self._grants[key] = (now + ttl, member_id, user_id)

    def forget_user(self, user_id: int | None, **_: Any) -> None:
        if user_id is None:
            return
        with self._lock:
            self._grants = {k: v for k, v in self._grants.items() if v[2] != user_id}


_grants = Grants()
credentials_ended.connect(_grants.forget_user, weak=False)


def _credential() -> str | None:
    """A digest of what identifies the caller: the bearer token, else the login cookies."""
    parts = [request.headers.get("Authorization") or ""]
    if not parts[0]:
        parts += [request.cookies.get(current_app.config.get("SESSION_COOKIE_NAME",
                                                             "session")) or "",
                  request.cookies.get("remember_token") or ""]
    if not any(parts):
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _may_watch(occurrence_id: int) -> int | None:
    """Checks the caller (or remembers he passed); the member id he watches as, if any."""
    credential = _credential()
    key = (credential or "", occurrence_id)
    if credential is not None:
        granted, member_id = _grants.get(key)
        if granted:
            return member_id
    occurrence = sessions_service.get_occurrence(db.session, occurrence_id)
    principal = current_principal()
    policy.require(principal, "live.watch", occurrence)
    db.session.rollback()
    member_id = None if isinstance(principal, SiteScreen) else getattr(
        principal, "member_id", None)
    if credential is not None:
        _grants.put(key, member_id, float(current_app.config["YUANJIAO_ATTENDANCE_AUTH_TTL"]),
                    None if isinstance(principal, SiteScreen) else getattr(principal, "id", None))
    return member_id


@pages.get("/live/<int:occurrence_id>/hls/<name>")
def hls_file(occurrence_id: int, name: str):
    """The playlist and its segments, for those who may watch the occurrence."""
    member_id = _may_watch(occurrence_id)
    directory = Path(occurrence_dir(hls_dir(), occurrence_id))
    if not FILE_NAME.fullmatch(name) or not (directory / name).is_file():
        raise NotLive("直播尚未开始，请稍候重试", details={"retry_after": 2})
    playlist = name.endswith(".m3u8")
    if not playlist and member_id:
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
