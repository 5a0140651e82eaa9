"""Live video rules: stream keys, who may publish or watch, recordings, the live state.

Functions take the database session, plain values and an explicit `now`; they validate,
change, flush, and never commit, read `request` or emit. The media runtime (the engine or
the media nodes, and the worker that turns engine events into database changes, signals
and Socket.IO messages) lives in `video.media`.

Signals for other domains (sent on the media worker thread, inside an app context,
after the change is committed):

- `broadcast_started` (sender = occurrence id, recording_id=...)
- `broadcast_ended` (sender = occurrence id, recording_id=..., reason=...)
- `subscriber_joined` / `subscriber_left` (sender = occurrence id, info={site_id,
  member_id, user_id, kind, ...}, resource_id=...)
- `hls_fetched` (sender = occurrence id, member_id=..., lasts=seconds): a member's login
  fetched an HLS segment (sent by video.hls_views in the request)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from pathlib import Path
from typing import Any

from blinker import Namespace
from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.models import User
from accounts.service import token_lookup
from core.principals import SiteScreen
from org.models import Member, Site
from sessions.models import Occurrence
from video.access import (  # noqa: F401  (re-exported: who may publish, watch, end)
    can_broadcast,
    can_manage_live,
    can_view_site_screen,
    can_watch,
    may_end_resource,
    require_broadcast,
    require_watch,
    resource_owner,
)
from video.errors import Forbidden, NotFound, Unauthorized
from video.models import Recording, StreamKey

signals = Namespace()
broadcast_started = signals.signal("broadcast-started")
broadcast_ended = signals.signal("broadcast-ended")
subscriber_joined = signals.signal("subscriber-joined")
subscriber_left = signals.signal("subscriber-left")
hls_fetched = signals.signal("hls-fetched")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --- stream keys ------------------------------------------------------------------------


def issue_stream_key(session: Session, occurrence: Occurrence, user: User,
                     now: dt.datetime) -> str:
    """A new stream key for the occurrence; every earlier key of it is revoked."""
    require_broadcast(user, occurrence)
    for old in session.scalars(select(StreamKey).where(
            StreamKey.occurrence_id == occurrence.id, StreamKey.revoked.is_(False))):
        old.revoked = True
    key = "sk_" + secrets.token_urlsafe(32)
    session.add(StreamKey(occurrence_id=occurrence.id, user_id=user.id, key_hash=_hash(key),
                          created_at=now))
    session.flush()
    return key


def stream_key_lookup(session: Session, key: str) -> StreamKey | None:
    """The live StreamKey for a bearer string, or None."""
    if not key or not key.startswith("sk_"):
        return None
    row = session.scalar(select(StreamKey).where(StreamKey.key_hash == _hash(key)))
    return None if row is None or row.revoked else row


def publisher_for(session: Session, occurrence: Occurrence, bearer: str | None,
                  cookie_user: User | None) -> User:
    """The user a WHIP request publishes as: stream key, trainer/admin token, or cookie.

    A wrong token is 401; a valid one that belongs elsewhere (another occurrence's key,
    someone who does not train this session) is 403.
    """
    if bearer:
        key = stream_key_lookup(session, bearer)
        if key is not None:
            if key.occurrence_id != occurrence.id:
                raise Forbidden("该推流密钥属于其他场次", code="foreign_stream_key")
            user = session.get(User, key.user_id)
            if user is None or not user.active:
                raise Unauthorized("推流密钥的用户已停用", code="invalid_token")
            require_broadcast(user, occurrence)
            return user
        row = token_lookup(session, bearer)
        if row is None:
            raise Unauthorized("推流密钥或令牌无效", code="invalid_token")
        if row.user is None:
            raise Forbidden("学习点屏幕令牌不能推流")
        require_broadcast(row.user, occurrence)
        return row.user
    if cookie_user is None:
        raise Unauthorized("需要推流密钥（Authorization: Bearer）", code="login_required")
    require_broadcast(cookie_user, occurrence)
    return cookie_user


def subscriber_info(session: Session, principal: User | SiteScreen,
                    site_id: int | None = None) -> dict[str, Any]:
    """What the live list shows about a connected subscriber (site and member names)."""
    if isinstance(principal, SiteScreen):
        site = session.get(Site, principal.site_id)
        return {"kind": "site", "site_id": principal.site_id, "owner": resource_owner(principal),
                "site_name": site.name if site else "", "label": site.name if site else ""}
    info: dict[str, Any] = {"kind": "user", "user_id": principal.id,
                            "owner": resource_owner(principal),
                            "user_name": principal.display_name or principal.username,
                            "role": principal.role}
    site = session.get(Site, site_id) if site_id else None
    if site is not None and can_view_site_screen(session, principal, site):
        info.update(kind="site", site_id=site.id, site_name=site.name, label=site.name)
    elif principal.member_id:
        member = session.get(Member, principal.member_id)
        info.update(kind="member", member_id=principal.member_id,
                    member_name=member.name if member else "",
                    label=member.name if member else info["user_name"])
    else:
        info["label"] = info["user_name"]
    return info


# --- recordings -------------------------------------------------------------------------


def new_recording_path(occurrence_id: int, now: dt.datetime) -> str:
    """A recording's file name, relative to YUANJIAO_RECORDINGS_DIR."""
    return f"occurrence-{occurrence_id}/{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}.webm"


def start_recording(session: Session, occurrence: Occurrence, path: str,
                    now: dt.datetime) -> Recording:
    recording = Recording(occurrence_id=occurrence.id, path=path, mime_type="video/webm",
                          started_at=now, status="recording")
    session.add(recording)
    session.flush()
    return recording


def finish_recording(session: Session, recordings_dir: str, occurrence_id: int,
                     info: dict[str, Any] | None, now: dt.datetime) -> Recording | None:
    """Complete (or fail) the recording of a broadcast that ended."""
    recording = None
    if info and info.get("path"):
        relative = _relative(recordings_dir, info["path"])
        recording = session.scalar(select(Recording).where(
            Recording.occurrence_id == occurrence_id, Recording.path == relative))
    if recording is None:
        recording = session.scalar(select(Recording).where(
            Recording.occurrence_id == occurrence_id, Recording.status == "recording",
        ).order_by(Recording.id.desc()).limit(1))
    if recording is None:
        return None
    recording.ended_at = now
    if info:
        recording.duration_seconds = info.get("duration_seconds")
        recording.size_bytes = info.get("size_bytes")
        recording.mime_type = info.get("mime_type") or recording.mime_type
        ok = info.get("status") == "complete" and (info.get("size_bytes") or 0) > 0
        recording.status = "complete" if ok else "failed"
    else:
        recording.status = "failed"
    session.flush()
    return recording


def _relative(recordings_dir: str, path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(recordings_dir).resolve()))
    except ValueError:
        return path


def fail_stale_recordings(session: Session, occurrence_id: int, now: dt.datetime) -> int:
    """Recordings left "recording" by a broadcast that is no longer live (a restart)."""
    rows = session.scalars(select(Recording).where(
        Recording.occurrence_id == occurrence_id, Recording.status == "recording")).all()
    for row in rows:
        row.status = "failed"
        row.ended_at = now
    session.flush()
    return len(rows)


def recording_by_path(session: Session, occurrence_id: int, recordings_dir: str,
                      path: str | None) -> Recording | None:
    if not path:
        return None
    return session.scalar(select(Recording).where(
        Recording.occurrence_id == occurrence_id,
        Recording.path == _relative(recordings_dir, path)))


def recording_for_occurrence(session: Session, occurrence_id: int) -> Recording | None:
    """The latest complete recording of an occurrence (make-up study plays it), or None."""
    return session.scalar(select(Recording).where(
        Recording.occurrence_id == occurrence_id, Recording.status == "complete",
    ).order_by(Recording.id.desc()).limit(1))


def recording_file(recordings_dir: str, recording: Recording) -> Path:
    """The file of a recording; NotFound when it is missing or outside the directory."""
    base = Path(recordings_dir).resolve()
    path = (base / recording.path).resolve()
    if base not in path.parents or not path.is_file():
        raise NotFound("录像文件不存在", details={"recording_id": recording.id})
    return path


def live_state(session: Session, occurrence_id: int, media_state: str | None) -> str:
    """waiting, live or ended: live from the media engine, ended once a broadcast was."""
    if media_state == "live":
        return "live"
    if media_state == "ended":
        return "ended"
    had_broadcast = session.scalar(select(Recording.id).where(
        Recording.occurrence_id == occurrence_id).limit(1))
    return "ended" if had_broadcast is not None else "waiting"
