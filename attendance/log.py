"""The attendance event log: time bounds, appends, roll calls, presence of sites.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.errors import (
    CheckedInElsewhere,
    Conflict,
    Locked,
    ValidationError,
)
from attendance.lookups import get_member
from attendance.models import (
    EVENT_TYPES,
    AttendanceEvent,
    OccurrenceReview,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from config import Settings
from core.converters import MAX_ID
from org.models import Site
from sessions.models import Occurrence

log = logging.getLogger(__name__)


#: A fact's time is the server's: a client's `at` may differ from it by this much at most
#: (clocks are never exact); it is then only checked, never used.
CLOCK_SKEW = dt.timedelta(seconds=120)
#: A mark queued offline (``queued: true``) may lie this far outside the occurrence.
QUEUED_MARGIN = dt.timedelta(minutes=30)
#: ... and must arrive within this long of its time (YUANJIAO_OFFLINE_MAX_HOURS).
OFFLINE_MAX = dt.timedelta(hours=12)
MEMBER_EVENT_TYPES = frozenset({"check_in", "check_out", "qr_check_in", "viewer_join",
                                "viewer_heartbeat", "viewer_leave"})


def is_locked(session: Session, occurrence_id: int) -> bool:
    review = session.get(OccurrenceReview, occurrence_id)
    return bool(review and review.locked)


def require_unlocked(session: Session, occurrence_id: int) -> None:
    if is_locked(session, occurrence_id):
        raise Locked("该学习活动的考勤已审核锁定", details={"occurrence_id": occurrence_id})


def find_event(session: Session, occurrence_id: int, source: str, event_id: str
               ) -> AttendanceEvent | None:
    return session.scalar(select(AttendanceEvent).where(
        AttendanceEvent.occurrence_id == occurrence_id, AttendanceEvent.source == source,
        AttendanceEvent.event_id == event_id))


def clean_event_id(event_id: Any) -> str:
    value = str(event_id).strip() if event_id is not None else ""
    if not value or len(value) > 100:
        raise ValidationError("event_id 必填，且不超过 100 个字符", field="event_id")
    return value


def offline_max(config: Settings) -> dt.timedelta:
    return dt.timedelta(hours=config.offline_max_hours)


def bound_time(occurrence: Any, at: dt.datetime | None, now: dt.datetime, *,
               queued: bool = False, max_delay: dt.timedelta = OFFLINE_MAX
               ) -> dt.datetime | None:
    """The time a fact is stored with: None (the server's time) or a queued mark's own.

    A fact's time is the server's. A client's `at` is accepted only as a check (within
    `CLOCK_SKEW` of the server's clock), except for a mark queued while the device was
    offline: its `at` counts when it lies within the occurrence (start - 30 min ...
    end + 30 min), is not in the future, and arrives within `max_delay` of it. Anything
    later is an organizer's correction, with a reason.
    """
    if at is None:
        if queued:
            raise ValidationError("离线补传的记录须带 at（记录时间）", field="at")
        return None
    if at.tzinfo is None:
        raise ValidationError("at 须带时区（ISO 8601）", field="at")
    if at > now + CLOCK_SKEW:
        raise ValidationError("at 不能晚于服务器当前时间", field="at",
                              details={"server_time": now.isoformat()})
    if not queued:
        if at < now - CLOCK_SKEW:
            raise ValidationError(
                "at 与服务器时间相差超过 2 分钟：离线记录请以 queued 补传，其余请由组织员更正",
                field="at", details={"server_time": now.isoformat()})
        return None
    if not (occurrence.starts_at - QUEUED_MARGIN <= at <= occurrence.ends_at + QUEUED_MARGIN):
        raise ValidationError("离线补传的时间不在该学习活动的时段内", field="at",
                              details={"server_time": now.isoformat()})
    if now - at > max_delay:
        raise ValidationError("离线补传已超过时限，请由组织员更正", field="at",
                              details={"max_hours": max_delay.total_seconds() / 3600})
    return min(at, now)


def queued_payload(queued: bool, payload: dict | None = None,
                   clock_offset_ms: Any = None) -> dict | None:
    """The payload that flags a mark queued offline (离线补传), with the device's offset."""
    if not queued:
        return payload
    out = dict(payload or {}, queued=True)
    if isinstance(clock_offset_ms, (int, float)) and not isinstance(clock_offset_ms, bool) \
            and abs(clock_offset_ms) < 1e12:
        out["clock_offset_ms"] = int(clock_offset_ms)
    return out


def member_events(session: Session, occurrence_id: int, member_id: int
                  ) -> list[AttendanceEvent]:
    return list(session.scalars(select(AttendanceEvent).where(
        AttendanceEvent.occurrence_id == occurrence_id,
        AttendanceEvent.member_id == member_id).order_by(AttendanceEvent.id)))


def _insert(session: Session, event: AttendanceEvent) -> tuple[AttendanceEvent, bool]:
    """Insert once; a concurrent duplicate (unique violation) returns the stored row."""
    try:
        with session.begin_nested():
            session.add(event)
        return event, True
    except IntegrityError:
        stored = find_event(session, event.occurrence_id, event.source, event.event_id)
        if stored is None:
            raise
        return stored, False


def record_event(
    session: Session,
    *,
    occurrence: Occurrence,
    type: str,
    source: str,
    event_id: str,
    now: dt.datetime,
    member_id: int | None = None,
    site_id: int | None = None,
    actor_user_id: int | None = None,
    client_time: dt.datetime | None = None,
    payload: dict | None = None,
    check_lock: bool = True,
    queued: bool = False,
    max_delay: dt.timedelta = OFFLINE_MAX,
) -> tuple[AttendanceEvent, bool]:
    """Append one fact; returns (event, created). A repeat returns the stored event.

    The repeat is recognised before anything else is checked, so a retry of an event
    that was stored gets the same answer even after the occurrence was locked.
    """
    event_id = clean_event_id(event_id)
    stored = find_event(session, occurrence.id, source, event_id)
    if stored is not None:
        return stored, False
    if type not in EVENT_TYPES:
        raise ValidationError(f"未知事件类型：{type}", field="type")
    if check_lock:
        require_unlocked(session, occurrence.id)
    if occurrence.status == "cancelled":
        raise Conflict("该学习活动已取消", code="occurrence_cancelled")
    at = bound_time(occurrence, client_time, now, queued=queued, max_delay=max_delay)
    payload = queued_payload(queued, payload)
    if type in MEMBER_EVENT_TYPES:
        if member_id is None:
            raise ValidationError("member_id 必填", field="member_id")
        member = get_member(session, member_id)
        if member.status != "active":
            raise ValidationError("该党员不在册（已转出）", field="member_id")
        if type in ("check_in", "qr_check_in"):
            _refuse_other_site(session, occurrence.id, member_id, site_id)
    event = AttendanceEvent(
        occurrence_id=occurrence.id, member_id=member_id, site_id=site_id, type=type,
        source=source, event_id=event_id, server_time=now, client_time=at,
        actor_user_id=actor_user_id, payload=payload or {},
    )
    return _insert(session, event)


def _refuse_other_site(session: Session, occurrence_id: int, member_id: int,
                       site_id: int | None) -> None:
    current = R.checked_in_site(member_events(session, occurrence_id, member_id), member_id)
    if current is not None and current != site_id:
        other = session.get(Site, current)
        raise CheckedInElsewhere(
            f"该党员已在其他学习点签到：{other.name if other else current}",
            details={"member_id": member_id, "site_id": current,
                     "site_name": other.name if other else None},
        )


def roll_call_appends(*, occurrence_id: int, site_id: int, member_ids: Any, state: Any,
                      source: str, event_id: Any, actor_user_id: int | None = None,
                      client_time: dt.datetime | None = None, queued: bool = False,
                      clock_offset_ms: Any = None, walk_in: bool = False) -> list[Any]:
    """A roll call (one or many members marked present or checked out at a site)
    validated into the writer's appends (see attendance.writer): ``<event_id>:<member_id>``
    per member, so a retried batch stores each member once; the writer stores them all or
    none.
    """
    from attendance.writer import Append

    kind, items = _roll_call_items(member_ids, state, event_id)
    return [Append(occurrence_id=occurrence_id, type=kind, source=source,
                   event_id=member_event_id, member_id=member_id, site_id=site_id,
                   actor_user_id=actor_user_id, client_time=client_time, queued=queued,
                   clock_offset_ms=clock_offset_ms,
                   payload={"walk_in": True} if walk_in else None)
            for member_id, member_event_id in items]


def parse_client_time(value: Any, queued: Any) -> tuple[dt.datetime | None, bool]:
    """A socket payload's ``at`` (ISO 8601 with a zone) and ``queued`` flag, validated."""
    if queued not in (None, True, False):
        raise ValidationError("queued 须为布尔值", field="queued")
    if value is None:
        return None, bool(queued)
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError("at 须为 ISO 8601 时间", field="at")
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError("at 须为 ISO 8601 时间", field="at") from exc
    if at.tzinfo is None:
        raise ValidationError("at 须带时区（ISO 8601）", field="at")
    return at.astimezone(dt.UTC), bool(queued)


def _roll_call_items(member_ids: Any, state: Any, event_id: Any) -> tuple[str, list]:
    """Validate a roll call: its event type, and (member_id, per-member event id) pairs.

    Each member gets his own event, ``<event_id>:<member_id>``, so that a retried batch
    stores each member once.
    """
    if state not in ("present", "checked_out"):
        raise ValidationError("state 只能是 present 或 checked_out", field="state")
    if not isinstance(member_ids, list) or not member_ids or len(member_ids) > 1000:
        raise ValidationError("member_ids 需为 1–1000 个党员", field="member_ids")
    event_id = clean_event_id(event_id)
    kind = "check_in" if state == "present" else "check_out"
    ids = []
    for raw in member_ids:
        # Integers (or their digits) in the database's range; not floats, bools, dicts.
        if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 10:
            raw = int(raw.strip())
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_ID:
            raise ValidationError(f"member_ids 含无效值：{str(raw)[:40]}", field="member_ids")
        ids.append(raw)
    items = [(member_id, f"{event_id}:{member_id}"[:100]) for member_id in dict.fromkeys(ids)]
    return kind, items


def events_of(session: Session, occurrence_id: int) -> list[AttendanceEvent]:
    return list(session.scalars(select(AttendanceEvent).where(
        AttendanceEvent.occurrence_id == occurrence_id).order_by(AttendanceEvent.id)))
