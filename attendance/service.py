"""Attendance operations: append events, derive records, leave, corrections, review, make-up.

Functions take the database session, plain values and an explicit `now`; they validate,
change, flush and return. They never commit, never read the request and never emit:
views and socket handlers commit once, then emit.

Event sources (the idempotency key is ``(occurrence_id, source, event_id)``):

* ``site:<site_id>``: roll call and screen events sent over the socket for a site
  (by its screen or its operator; ``actor_user_id`` tells who);
* ``viewer:member:<member_id>``: a member watching alone;
* ``qr:member:<member_id>``: QR check-ins (the event id is the token's digest, so each
  member can use one token once);
* ``api:user:<user_id>`` / ``api:site:<site_id>``: the REST API, per caller, so that two
  integrations counting their event ids from 1 never swallow each other's events;
* ``server``: facts the server observes (a screen's socket closing);
* ``organizer:user:<user_id>``: leave decisions, corrections and locks, for the log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.errors import (
    CheckedInElsewhere,
    Conflict,
    Forbidden,
    Locked,
    NotFound,
    QrNotAllowed,
    QrRefused,
    ValidationError,
)
from attendance.models import (
    EVENT_TYPES,
    STATUSES,
    AttendanceEvent,
    Correction,
    LeaveRequest,
    MakeupTask,
    OccurrenceReview,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from core.converters import MAX_ID
from org import service as org_service
from org.models import Member, OrgUnit, Site
from sessions import service as sessions_service
from sessions.models import Occurrence
from sessions.targets import occurrence_site_ids, occurrence_unit_ids  # the targeting rule

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


# --- lookups and settings ----------------------------------------------------------------


def get_occurrence(session: Session, occurrence_id: int) -> Occurrence:
    """The occurrence, or NotFound (the sessions domain owns occurrences)."""
    return sessions_service.get_occurrence(session, occurrence_id)


def get_site(session: Session, site_id: Any) -> Site:
    """The site named by a client-sent id (the org domain owns sites)."""
    return org_service.get_site(session, None, _client_id(site_id, "学习点", "site_id"))


def get_member(session: Session, member_id: Any) -> Member:
    """The member named by a client-sent id (the org domain owns the roster)."""
    return org_service.get_member(session, None, _client_id(member_id, "党员", "member_id"))


def _client_id(value: Any, what: str, field: str) -> int:
    """An id from a socket payload or form: anything not an integer names nothing."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise NotFound(f"{what}不存在：{str(value)[:40]}", details={field: str(value)[:40]}) \
            from None
    if isinstance(value, bool) or not 0 < number <= MAX_ID:
        raise NotFound(f"{what}不存在：{str(value)[:40]}", details={field: str(value)[:40]})
    return number


def rules_for(occurrence: Occurrence, config: Mapping[str, Any]) -> R.Rules:
    """The thresholds of an occurrence, from its session and the app settings."""
    study = occurrence.session
    return R.Rules(
        late_after_minutes=study.late_after_minutes,
        present_threshold_percent=study.present_threshold_percent,
        left_early_minutes=int(config.get("YUANJIAO_LEFT_EARLY_MINUTES", 10)),
        grace_seconds=int(config.get("YUANJIAO_ATTENDANCE_GRACE_SECONDS", 90)),
    )


def expected_member_ids(session: Session, occurrence: Occurrence) -> list[int]:
    return sessions_service.expected_member_ids(session, occurrence)


def is_expected(session: Session, occurrence: Occurrence, member_id: int) -> bool:
    return sessions_service.is_expected(session, occurrence, member_id)


# --- who may --------------------------------------------------------------------------


def is_screen(principal: Any) -> bool:
    return getattr(principal, "role", None) == "site_screen"


def can_manage_occurrence(session: Session, user: Any, occurrence: Occurrence) -> bool:
    """Admins, and organizers whose scope covers a unit or site the occurrence targets."""
    if is_screen(user):
        return False
    if user.role == "admin":
        return True
    if user.role != "organizer":
        return False
    from accounts.service import managed_org_unit_ids

    managed = set(managed_org_unit_ids(session, user) or [])
    return bool(managed & occurrence_unit_ids(occurrence))


def require_manage_occurrence(session: Session, user: Any, occurrence: Occurrence) -> None:
    if not can_manage_occurrence(session, user, occurrence):
        raise Forbidden("无权管理该学习活动的考勤", details={"occurrence_id": occurrence.id})


def can_view_occurrence(session: Session, user: Any, occurrence: Occurrence) -> bool:
    """Managers, the session's trainer, and operators of a targeted site."""
    if can_manage_occurrence(session, user, occurrence):
        return True
    if is_screen(user):
        return user.site_id in occurrence_site_ids(session, occurrence)
    if user.role == "trainer":
        return occurrence.session.trainer_id == user.id
    if user.role == "site_operator":
        return user.site_id in occurrence_site_ids(session, occurrence)
    return False


def require_view_occurrence(session: Session, user: Any, occurrence: Occurrence) -> None:
    if not can_view_occurrence(session, user, occurrence):
        raise Forbidden("无权查看该学习活动的考勤", details={"occurrence_id": occurrence.id})


def require_site_of_occurrence(session: Session, occurrence: Occurrence, site: Site) -> None:
    if site.id not in occurrence_site_ids(session, occurrence):
        raise Forbidden("该学习点不在本次学习活动范围内",
                        details={"occurrence_id": occurrence.id, "site_id": site.id})


def require_operate_site(session: Session, principal: Any, occurrence: Occurrence,
                         site: Site) -> None:
    """Roll call at a site: admin, an organizer in scope, its operator, or its own screen."""
    require_site_of_occurrence(session, occurrence, site)
    if is_screen(principal):
        if principal.site_id != site.id:
            raise Forbidden("学习点屏幕只能操作本学习点", details={"site_id": site.id})
        return
    from accounts.service import can_operate_site

    if can_operate_site(session, principal, site) or (
            can_manage_occurrence(session, principal, occurrence)
            and member_scope(session, principal, occurrence) is None):
        return  # not an organizer of one part of a joint occurrence at another's site
    raise Forbidden("无权操作该学习点的考勤", details={"site_id": site.id})


def member_scope(session: Session, principal: Any, occurrence: Occurrence
                 ) -> Callable[[Member | None, int | None], bool] | None:
    """Whose names `principal` may see, correct and export in an occurrence: a predicate
    on (member, site id of his row), or None for everyone.

    Admins and the session's trainer see the whole roster. In a joint occurrence an
    organizer sees the members of his own subtree only; a site's operator or screen, the
    members of that site (by home site or by the site they checked in at). The others
    appear only in counts.
    """
    if not is_screen(principal) and (principal.role == "admin" or (
            principal.role == "trainer" and occurrence.session.trainer_id == principal.id)):
        return None
    if is_screen(principal) or principal.role == "site_operator":
        site_id = principal.site_id
        return lambda m, row_site: m is not None and (
            m.home_site_id == site_id or row_site == site_id)
    if principal.role == "organizer":
        from accounts.service import managed_org_unit_ids

        managed = set(managed_org_unit_ids(session, principal) or [])
        if occurrence_unit_ids(occurrence) <= managed and all(
                u in managed for u in _member_unit_ids(session, occurrence)):
            return None  # his subtree holds the whole occurrence
        return lambda m, _row_site: m is not None and m.org_unit_id in managed
    return lambda _m, _row_site: False


def _member_unit_ids(session: Session, occurrence: Occurrence) -> set[int]:
    ids = expected_member_ids(session, occurrence)
    if not ids:
        return set()
    return set(session.scalars(select(Member.org_unit_id).where(Member.id.in_(ids))
                               .distinct()))


def visible_rows(session: Session, principal: Any, occurrence: Occurrence,
                 all_rows: list[Row]) -> list[Row]:
    """The rows `principal` may see by name (see member_scope)."""
    visible = member_scope(session, principal, occurrence)
    if visible is None:
        return all_rows
    return [r for r in all_rows if visible(r.member, r.site.id if r.site else None)]


def require_member_in_scope(session: Session, principal: Any, occurrence: Occurrence,
                            member_id: int) -> None:
    """Correct or decide for a member only within one's scope (403 otherwise)."""
    visible = member_scope(session, principal, occurrence)
    if visible is None:
        return
    member = session.get(Member, member_id)
    if member is None or not visible(member, None):
        raise Forbidden("该党员不在您管理的范围内", details={"member_id": member_id})


def require_manage_whole_occurrence(session: Session, user: Any,
                                    occurrence: Occurrence) -> None:
    """Locking reviews everyone's attendance: an admin, or an organizer whose subtree holds
    the whole occurrence (not one of several organizations of a joint one)."""
    require_manage_occurrence(session, user, occurrence)
    if member_scope(session, user, occurrence) is not None:
        raise Forbidden("联合学习活动涉及其他组织，只有系统管理员或上级组织可以锁定",
                        details={"occurrence_id": occurrence.id})


def require_check_in_scope(session: Session, principal: Any, occurrence: Occurrence,
                           site: Site, member_ids: Iterable[int],
                           expected: Iterable[int] | None = None) -> None:
    """A site's operator or screen checks in the members expected for the occurrence, and
    walk-ins of the site's own organization (the tree its top unit heads: the same people
    the roll call's walk-in search finds, org.service.walk_in_candidates). Another
    organization's member is refused exactly as an unknown id is, so that trying ids
    reveals no name. Managers of the occurrence are not limited here.

    `expected` may be passed in when the caller caches it (the socket connection does).
    """
    if not is_screen(principal) and can_manage_occurrence(session, principal, occurrence):
        return
    expected_ids = set(expected if expected is not None
                       else expected_member_ids(session, occurrence))
    others = sorted({m for m in member_ids if m not in expected_ids})
    if not others:
        return
    own = set(session.scalars(select(Member.id).where(
        Member.id.in_(others), Member.org_unit_id.in_(org_service.organization_units(
            session, site)))))
    for member_id in others:
        if member_id not in own:
            raise NotFound(f"党员不存在：{member_id}", details={"member_id": member_id})


def member_of(principal: Any) -> Member:
    """The roster entry of a member user; others cannot act as a member."""
    if is_screen(principal) or getattr(principal, "role", None) != "member" \
            or principal.member is None:
        raise Forbidden("只有党员本人可以执行此操作")
    return principal.member


def api_source(principal: Any) -> str:
    """The idempotency source of an API caller (see the module docstring)."""
    if is_screen(principal):
        return f"api:site:{principal.site_id}"
    return f"api:user:{principal.id}"


# --- the log --------------------------------------------------------------------------


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


def offline_max(config: Mapping[str, Any]) -> dt.timedelta:
    return dt.timedelta(hours=float(config.get("YUANJIAO_OFFLINE_MAX_HOURS", 12)))


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
                   payload=queued_payload(queued, {"walk_in": True} if walk_in else None,
                                          clock_offset_ms))
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


# --- QR check-in ------------------------------------------------------------------------


def _qr_serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="attendance-qr")


def qr_slot(now: dt.datetime, rotate_seconds: int) -> int:
    return int(now.timestamp() // rotate_seconds)


def make_qr_token(secret: str, occurrence_id: int, site_id: int, now: dt.datetime,
                  rotate_seconds: int) -> tuple[str, dt.datetime]:
    """The current rotating token of a site screen, and when the next one replaces it."""
    slot = qr_slot(now, rotate_seconds)
    token = _qr_serializer(secret).dumps({"o": occurrence_id, "s": site_id, "t": slot})
    next_at = dt.datetime.fromtimestamp((slot + 1) * rotate_seconds, dt.UTC)
    return token, next_at


def read_qr_token(secret: str, token: str, now: dt.datetime, rotate_seconds: int
                  ) -> tuple[int, int]:
    """(occurrence_id, site_id) of a token of the current or the previous slot."""
    occurrence_id, site_id, _slot = _read_qr(secret, token, now, rotate_seconds)
    return occurrence_id, site_id


def _read_qr(secret: str, token: str, now: dt.datetime, rotate_seconds: int
             ) -> tuple[int, int, int]:
    try:
        data = _qr_serializer(secret).loads(token)
        occurrence_id, site_id, slot = int(data["o"]), int(data["s"]), int(data["t"])
    except (BadSignature, KeyError, TypeError, ValueError) as exc:
        raise QrRefused("二维码无效", code="qr_invalid") from exc
    if qr_slot(now, rotate_seconds) - slot not in (0, 1):
        raise QrRefused("二维码已过期，请扫描屏幕上的最新二维码", code="qr_expired")
    return occurrence_id, site_id, slot


def room_code(secret: str, occurrence_id: int, site_id: int, slot: int) -> str:
    """The 4-digit code shown beside a slot's QR (said aloud in the room)."""
    import hmac

    digest = hmac.new(secret.encode(), f"room-code:{occurrence_id}:{site_id}:{slot}".encode(),
                      hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 10000:04d}"


def current_room_code(secret: str, occurrence_id: int, site_id: int, now: dt.datetime,
                      rotate_seconds: int) -> str:
    return room_code(secret, occurrence_id, site_id, qr_slot(now, rotate_seconds))


def _in_networks(remote_addr: str | None, networks: str) -> bool:
    import ipaddress

    try:
        addr = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for line in networks.splitlines():
        try:
            if addr in ipaddress.ip_network(line.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass
class QrCheckIn:
    """A QR check-in that passed every rule, ready for the writer."""

    occurrence: Occurrence
    site: Site
    member: Member
    source: str
    event_id: str


def qr_check_in_rules(session: Session, *, token: str, member: Member, secret: str,
                      now: dt.datetime, rotate_seconds: int, code: str | None = None,
                      remote_addr: str | None = None) -> QrCheckIn:
    """Every rule of a QR check-in but the once-per-token one (the log's key holds that).

    The token is the screen's current (or previous) one; the site is one of the
    occurrence's; the member is on the roll and expected at the occurrence (a walk-in is
    the operator's roll call); the occurrence has not ended; and, where the site asks for
    them, the phone is on one of the site's networks and the member typed the 4-digit code
    shown beside the QR. A forwarded link fails the last two; an outsider fails the roll.
    """
    occurrence_id, site_id, slot = _read_qr(secret, token, now, rotate_seconds)
    occurrence = get_occurrence(session, occurrence_id)
    site = get_site(session, site_id)
    require_site_of_occurrence(session, occurrence, site)
    if member.status != "active":
        raise Forbidden("该党员不在册（已转出）")
    if now > occurrence.ends_at:
        raise QrRefused("学习活动已结束", code="qr_expired")
    if not is_expected(session, occurrence, member.id):
        raise QrNotAllowed(
            "您不在本次学习活动的应到名单中；临时参加请找会议室管理员点名登记（记为列席）",
            code="qr_not_expected")
    if site.checkin_networks and not _in_networks(remote_addr, site.checkin_networks):
        raise QrNotAllowed("请连接会议室的网络后再扫码签到（本学习点只接受会场网络内的签到）",
                        code="qr_network")
    if site.checkin_code_required:
        typed = (code or "").strip()
        if not typed:
            raise QrRefused("请输入屏幕上二维码旁的 4 位签到码", code="qr_code_required",
                            details={"field": "code"})
        valid = {room_code(secret, occurrence.id, site.id, s) for s in (slot, slot + 1)}
        if typed not in valid:
            raise QrRefused("签到码不正确，请看屏幕上二维码旁的 4 位数字", code="qr_code_wrong",
                            details={"field": "code"})
    return QrCheckIn(occurrence, site, member, source=f"qr:member:{member.id}",
                     event_id=hashlib.sha256(token.encode()).hexdigest())


# --- derived records ------------------------------------------------------------------


def approved_leave_ids(session: Session, occurrence_id: int) -> set[int]:
    return set(session.scalars(select(LeaveRequest.member_id).where(
        LeaveRequest.occurrence_id == occurrence_id, LeaveRequest.status == "approved")))


def overrides_of(session: Session, occurrence_id: int) -> dict[int, R.Override]:
    """The latest correction per member."""
    out: dict[int, R.Override] = {}
    for c in session.scalars(select(Correction).where(
            Correction.occurrence_id == occurrence_id).order_by(Correction.id)):
        out[c.member_id] = R.Override(status=c.status, minutes=c.minutes, reason=c.reason)
    return out


def broadcast_end(session: Session, occurrence_id: int) -> dt.datetime | None:
    """When attendance stopped counting before the scheduled end, if it did: the broadcast's
    end (the recording's end), or an early lock's moment, whichever came first."""
    from video.models import Recording

    ended = session.scalar(select(Recording.ended_at).where(
        Recording.occurrence_id == occurrence_id, Recording.ended_at.is_not(None))
        .order_by(Recording.ended_at.desc()).limit(1))
    review = session.get(OccurrenceReview, occurrence_id)
    if review is not None and review.locked and review.locked_at is not None:
        ended = min(ended, review.locked_at) if ended else review.locked_at
    return ended


def records(session: Session, occurrence: Occurrence, *, config: Mapping[str, Any],
            now: dt.datetime, member_ids: Iterable[int] | None = None
            ) -> dict[int, R.MemberRecord]:
    """Every expected member's record (derived from the log, then corrected)."""
    events: Iterable[AttendanceEvent] = events_of(session, occurrence.id)
    expected = expected_member_ids(session, occurrence)
    if member_ids is not None:
        wanted = set(member_ids)
        expected = [m for m in expected if m in wanted] or list(wanted)
        events = [e for e in events if e.member_id is None or e.member_id in wanted]
    out = R.derive_records(
        events, expected_member_ids=expected, start=occurrence.starts_at,
        end=occurrence.ends_at, rules=rules_for(occurrence, config), now=now,
        excused_member_ids=approved_leave_ids(session, occurrence.id),
        overrides=overrides_of(session, occurrence.id),
        closes_at=broadcast_end(session, occurrence.id),
    )
    if member_ids is not None:
        out = {k: v for k, v in out.items() if k in wanted}
    return out


@dataclass
class Row:
    """A record with the names the sheets and the API show."""

    record: R.MemberRecord
    member: Member
    site: Site | None
    expected: bool
    notes: str


def N_(message: str) -> str:
    """Mark a string for the catalogue without translating it here (Babel's N_ keyword):
    exports stay Chinese, pages translate these labels when they render them."""
    return message


STATUS_LABELS = {"present": N_("出席"), "late": N_("迟到"), "left_early": N_("早退"),
                 "absent": N_("缺席"), "excused": N_("请假"), "not_started": N_("未开始"),
                 "not_arrived": N_("未到")}
#: The statuses an organizer's correction may set.
CORRECTION_LABELS = {k: v for k, v in STATUS_LABELS.items() if k in STATUSES}


def site_offline_periods(session: Session, occurrence: Occurrence, *,
                         config: Mapping[str, Any], now: dt.datetime
                         ) -> dict[int, list[tuple[dt.datetime, dt.datetime]]]:
    """Per site, when its screen/operator link was down beyond the grace period (站点离线),
    clipped to the occurrence. Reported beside the records; never a member's leave."""
    horizon = min(now, occurrence.ends_at)
    down = R.site_down_periods(events_of(session, occurrence.id), horizon,
                               rules_for(occurrence, config).grace_seconds)
    out = {}
    for site_id, periods in down.items():
        clipped = R.clip(periods, occurrence.starts_at, occurrence.ends_at)
        if clipped:
            out[site_id] = clipped
    return out


def _queued_member_ids(session: Session, occurrence_id: int) -> set[int]:
    """Members with a mark queued offline and stored later (离线补传)."""
    return {member_id for member_id, payload in session.execute(
        select(AttendanceEvent.member_id, AttendanceEvent.payload).where(
            AttendanceEvent.occurrence_id == occurrence_id,
            AttendanceEvent.member_id.is_not(None),
            AttendanceEvent.type.in_(("check_in", "check_out"))))
        if isinstance(payload, dict) and payload.get("queued")}


def names_for(session: Session, *, member_ids: Iterable[int], user_ids: Iterable[int]
              ) -> tuple[dict[int, str], dict[int, str]]:
    """Members' names ("张三（M00012）") and users' display names, for audit tables."""
    from accounts.models import User

    member_ids, user_ids = set(member_ids) - {None}, set(user_ids) - {None}
    members = {m.id: f"{m.name}（{m.member_no}）" for m in session.scalars(
        select(Member).where(Member.id.in_(member_ids)))} if member_ids else {}
    users = {u.id: u.display_name or u.username for u in session.scalars(
        select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    return members, users


def format_periods(periods: Iterable[tuple[dt.datetime, dt.datetime]], tz: str) -> str:
    """``19:30–19:42、20:05–20:10`` in the site's time zone."""
    from core.timeutil import zone

    z = zone(tz)
    return "、".join(f"{a.astimezone(z):%H:%M}–{b.astimezone(z):%H:%M}" for a, b in periods)


def rows(session: Session, occurrence: Occurrence, *, config: Mapping[str, Any],
         now: dt.datetime) -> list[Row]:
    """One row per expected member (and per walk-in), ordered by site then member number."""
    recs = records(session, occurrence, config=config, now=now)
    expected = set(expected_member_ids(session, occurrence))
    members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(recs)))}
    site_ids = {r.site_id for r in recs.values() if r.site_id} | {
        m.home_site_id for m in members.values() if m.home_site_id}
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(site_ids)))}
    overrides = overrides_of(session, occurrence.id)
    leave = {lr.member_id: lr for lr in session.scalars(select(LeaveRequest).where(
        LeaveRequest.occurrence_id == occurrence.id, LeaveRequest.status == "approved"))}
    queued = _queued_member_ids(session, occurrence.id)
    offline = site_offline_periods(session, occurrence, config=config, now=now)
    tz = occurrence.session.timezone
    out = []
    for member_id, rec in recs.items():
        member = members.get(member_id)
        if member is None:
            continue
        site = sites.get(rec.site_id or 0) or sites.get(member.home_site_id or 0)
        notes = []
        if rec.corrected:
            notes.append(f"更正：{overrides[member_id].reason}")
        if member_id in leave:
            notes.append(f"请假：{leave[member_id].reason}")
        if rec.first_join and rec.site_id is None:
            notes.append("个人在线观看")
        if member_id not in expected:
            notes.append("非应到人员")
        if member_id in queued:
            notes.append("离线补传")
        if rec.site_id in offline:
            notes.append(f"站点离线 {format_periods(offline[rec.site_id], tz)}")
        # The other faults, unless a correction set the status (notes follow the status).
        extra = [] if rec.corrected else [
            STATUS_LABELS[f] for f in rec.flags if f != rec.status and f in STATUS_LABELS]
        if extra:
            notes.append("、".join(extra))
        out.append(Row(rec, member, site, member_id in expected, "；".join(notes)))
    out.sort(key=lambda r: (r.site.id if r.site else 1 << 30, r.member.member_no))
    return out


def present_now(session: Session, occurrence: Occurrence, *, config: Mapping[str, Any],
                now: dt.datetime) -> dict[int, int | None]:
    """Members here right now -> site id (None: watching alone)."""
    return R.present_now(events_of(session, occurrence.id), now=now,
                         grace_seconds=rules_for(occurrence, config).grace_seconds)


def snapshot(session: Session, occurrence: Occurrence, *, config: Mapping[str, Any],
             now: dt.datetime, with_names: bool = True,
             name_visible: Callable[[Member | None, int | None], bool] | None = None
             ) -> dict[str, Any]:
    """The live picture: per site the expected and present members; counts; lock.

    `name_visible` (see member_scope) blanks the names of members out of the caller's
    scope: they still count."""
    here = present_now(session, occurrence, config=config, now=now)
    expected = expected_member_ids(session, occurrence)
    member_ids = set(expected) | set(here)
    members = {m.id: m for m in session.scalars(select(Member).where(
        Member.id.in_(member_ids)))}
    site_ids = occurrence_site_ids(session, occurrence)
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(site_ids)))}
    online = _online_sites(session, occurrence.id)
    offline = site_offline_periods(session, occurrence, config=config, now=now)
    per_site: dict[Any, dict[str, Any]] = {}

    def bucket(site_id: int | None) -> dict[str, Any]:
        key = site_id if site_id in sites else None
        if key not in per_site:
            site = sites.get(key) if key is not None else None
            per_site[key] = {"site_id": key, "name": site.name if site else "个人在线/其他",
                             "online": key in online, "expected": [], "present": [],
                             "offline_periods": [[a.isoformat(), b.isoformat()]
                                                 for a, b in offline.get(key, [])]}
        return per_site[key]

    for sid in site_ids:
        bucket(sid)

    def person(mid: int, site_id: int | None = None) -> dict[str, Any]:
        m = members.get(mid)
        if name_visible is not None and not name_visible(m, site_id):
            return {"member_id": mid, "name": "", "member_no": ""}
        return {"member_id": mid, "name": m.name if m else str(mid),
                "member_no": m.member_no if m else ""}

    for mid in expected:
        m = members.get(mid)
        bucket(m.home_site_id if m else None)["expected"].append(person(mid))
    for mid, sid in here.items():
        bucket(sid)["present"].append(person(mid, sid))
    sites_out = []
    for b in per_site.values():
        b["expected_count"] = len(b["expected"])
        b["present_count"] = len(b["present"])
        b["present_ids"] = [p["member_id"] for p in b["present"]]
        if not with_names:
            b.pop("expected")
            b.pop("present")
        sites_out.append(b)
    sites_out.sort(key=lambda b: (b["site_id"] is None, b["site_id"] or 0))
    # The records' statuses (leave and corrections applied): the same derivation as the
    # table, the sheets and the ledger, so the cards never disagree with them.
    recs = records(session, occurrence, config=config, now=now)
    counts: dict[str, int] = defaultdict(int)
    for rec in recs.values():
        counts[rec.status] += 1
    out = {"occurrence_id": occurrence.id, "locked": is_locked(session, occurrence.id),
           "expected_count": len(expected), "present_count": len(here),
           "attended_count": sum(counts[k] for k in ATTENDED),
           "excused_count": counts["excused"], "status_counts": dict(counts),
           "sites": sites_out, "server_time": now.isoformat()}
    if with_names:
        out["statuses"] = {str(mid): rec.status for mid, rec in recs.items()}
    return out


def _online_sites(session: Session, occurrence_id: int) -> set[int]:
    state: dict[int, bool] = {}
    for site_id, type_ in session.execute(
            select(AttendanceEvent.site_id, AttendanceEvent.type).where(
                AttendanceEvent.occurrence_id == occurrence_id,
                AttendanceEvent.type.in_(("site_online", "site_offline")))
            .order_by(AttendanceEvent.id)):
        state[site_id] = type_ == "site_online"
    return {s for s, on in state.items() if on}


# --- leave, corrections, review -----------------------------------------------------------


def file_leave(session: Session, *, occurrence: Occurrence, member: Member, reason: str,
               filed_by_id: int | None, now: dt.datetime) -> LeaveRequest:
    reason = (reason or "").strip()
    if not reason or len(reason) > 1000:
        raise ValidationError("请假事由必填，且不超过 1000 字", field="reason")
    require_unlocked(session, occurrence.id)
    existing = session.scalar(select(LeaveRequest).where(
        LeaveRequest.occurrence_id == occurrence.id, LeaveRequest.member_id == member.id,
        LeaveRequest.status.in_(("requested", "approved"))))
    if existing is not None:
        raise Conflict("该党员已有请假申请", details={"leave_request_id": existing.id})
    leave = LeaveRequest(occurrence_id=occurrence.id, member_id=member.id, reason=reason,
                         filed_by_id=filed_by_id, filed_at=now)
    session.add(leave)
    session.flush()
    return leave


def decide_leave(session: Session, *, leave: LeaveRequest, approve: bool, user_id: int,
                 now: dt.datetime) -> LeaveRequest:
    require_unlocked(session, leave.occurrence_id)
    if leave.status != "requested" and not (approve and leave.status == "rejected"):
        raise Conflict("该请假申请已处理", details={"status": leave.status})
    leave.status = "approved" if approve else "rejected"
    leave.decided_by_id, leave.decided_at = user_id, now
    occurrence = get_occurrence(session, leave.occurrence_id)
    record_event(session, occurrence=occurrence,
                 type="leave_approved" if approve else "leave_rejected",
                 source=f"organizer:user:{user_id}", event_id=f"leave:{leave.id}:{leave.status}",
                 now=now, member_id=None, actor_user_id=user_id,
                 payload={"member_id": leave.member_id, "leave_request_id": leave.id})
    session.flush()
    return leave


def correct(session: Session, *, occurrence: Occurrence, member_id: int,
            status: str | None, minutes: float | None, reason: str, user_id: int,
            config: Mapping[str, Any], now: dt.datetime) -> Correction:
    """Override a member's status and/or minutes; audited with before and after."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("更正需要填写原因", field="reason")
    if status is None and minutes is None:
        raise ValidationError("请给出更正后的状态或时长", field="status")
    if status is not None and status not in STATUSES:
        raise ValidationError(f"未知状态：{status}", field="status",
                              details={"allowed": list(STATUSES)})
    max_minutes = (occurrence.ends_at - occurrence.starts_at).total_seconds() / 60
    if minutes is not None and not 0 <= minutes <= max_minutes:
        raise ValidationError(f"时长需在 0–{max_minutes:.0f} 分钟之间", field="minutes")
    require_unlocked(session, occurrence.id)
    get_member(session, member_id)
    before = records(session, occurrence, config=config, now=now, member_ids=[member_id])
    rec = before[member_id]
    correction = Correction(
        occurrence_id=occurrence.id, member_id=member_id, status=status, minutes=minutes,
        reason=reason, corrected_by_id=user_id, corrected_at=now,
        before={"status": rec.status, "minutes": rec.minutes},
        after={"status": status or rec.status,
               "minutes": rec.minutes if minutes is None else round(float(minutes), 1)},
    )
    session.add(correction)
    session.flush()
    record_event(session, occurrence=occurrence, type="correction",
                 source=f"organizer:user:{user_id}", event_id=f"correction:{correction.id}",
                 now=now, actor_user_id=user_id,
                 payload={"member_id": member_id, "correction_id": correction.id,
                          "before": correction.before, "after": correction.after,
                          "reason": reason})
    return correction


def set_lock(session: Session, *, occurrence: Occurrence, locked: bool, user: Any,
             now: dt.datetime, early: bool = False, reason: str | None = None
             ) -> OccurrenceReview:
    """Lock a reviewed occurrence (organizer or admin); only an admin unlocks.

    A lock before the occurrence's end needs `early` and a reason: it freezes the records
    at the lock's moment (nothing after it counts), and the log keeps who did it and why.
    """
    if not locked and user.role != "admin":
        raise Forbidden("只有系统管理员可以解锁")
    reason = (reason or "").strip()
    if locked and now < occurrence.ends_at and not is_locked(session, occurrence.id):
        if not early:
            raise Conflict(
                "学习活动尚未结束，不能锁定考勤；如确需提前锁定，请说明原因（锁定后的签到与观看不再计入）",
                code="not_ended", details={"ends_at": occurrence.ends_at.isoformat()})
        if not reason or len(reason) > 1000:
            raise ValidationError("提前锁定需要填写原因（不超过 1000 字）", field="reason")
    from attendance.writer import lock_occurrence

    lock_occurrence(session, occurrence.id)  # between two batches of the writer
    review = session.get(OccurrenceReview, occurrence.id)
    if review is None:
        review = OccurrenceReview(occurrence_id=occurrence.id, locked=False)
        session.add(review)
    if review.locked == locked:
        return review
    if locked:
        review.locked, review.locked_by_id, review.locked_at = True, user.id, now
    else:
        review.locked, review.unlocked_by_id, review.unlocked_at = False, user.id, now
    session.flush()
    payload = ({"early": True, "reason": reason} if locked and now < occurrence.ends_at
               else {"reason": reason} if reason else None)
    record_event(session, occurrence=occurrence, type="locked" if locked else "unlocked",
                 source=f"organizer:user:{user.id}", event_id=uuid.uuid4().hex, now=now,
                 actor_user_id=user.id, check_lock=False, payload=payload)
    return review


# --- reports and ledger -------------------------------------------------------------------


ATTENDED = ("present", "late", "left_early")


def occurrences_for_units(session: Session, unit_ids: Iterable[int] | None,
                          start: dt.datetime, end: dt.datetime) -> list[Occurrence]:
    """Scheduled occurrences starting in [start, end) (all when unit_ids is None)."""
    from sessions.models import StudySession, session_org_units, session_sites

    q = select(Occurrence).join(StudySession).where(
        Occurrence.starts_at >= start, Occurrence.starts_at < end,
        Occurrence.status == "scheduled").order_by(Occurrence.starts_at)
    if unit_ids is not None:
        ids = list(unit_ids)
        q = q.where(or_(
            StudySession.id.in_(select(session_org_units.c.session_id).where(
                session_org_units.c.org_unit_id.in_(ids))),
            StudySession.id.in_(select(session_sites.c.session_id).join(
                Site, Site.id == session_sites.c.site_id).where(Site.org_unit_id.in_(ids))),
        ))
    return list(session.scalars(q))


def member_totals(session: Session, occurrences: Iterable[Occurrence], *,
                  config: Mapping[str, Any], now: dt.datetime,
                  member_filter: set[int] | None = None) -> dict[int, dict[str, float]]:
    """Per member over occurrences: expected, attended, excused counts and minutes."""
    totals: dict[int, dict[str, float]] = defaultdict(
        lambda: {"expected": 0, "attended": 0, "excused": 0, "absent": 0, "minutes": 0.0})
    for occ in occurrences:
        for member_id, rec in records(session, occ, config=config, now=now).items():
            if member_filter is not None and member_id not in member_filter:
                continue
            t = totals[member_id]  # listed, even before his first lesson is over
            if rec.status in R.PENDING:
                continue  # not over yet: neither attended nor absent
            t["expected"] += 1
            t["minutes"] += rec.minutes
            if rec.status in ATTENDED:
                t["attended"] += 1
            elif rec.status == "excused":
                t["excused"] += 1
            else:
                t["absent"] += 1
    return totals


def rate(attended: float, expected: float, excused: float) -> float | None:
    """Attendance rate: attended / (expected − excused); None when nothing was due."""
    due = expected - excused
    return round(attended / due, 4) if due > 0 else None


def period_presets(today: dt.date) -> dict[str, tuple[str, dt.date, dt.date]]:
    """The report's periods: key -> (label, first day, last day), up to today."""
    first_month = today.replace(day=1)
    last_month_end = first_month - dt.timedelta(days=1)
    quarter = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
    return {
        "month": (N_("本月"), first_month, today),
        "last_month": (N_("上月"), last_month_end.replace(day=1), last_month_end),
        "quarter": (N_("本季度"), quarter, today),
        "year": (N_("本年"), today.replace(month=1, day=1), today),
    }


def report(session: Session, *, unit_id: int | None, unit_ids: list[int] | None,
           start: dt.datetime, end: dt.datetime, config: Mapping[str, Any],
           now: dt.datetime, home_site_id: int | None = None) -> dict[str, Any]:
    """Attendance per member and per branch, for the members of a unit's subtree (only
    those whose home site is `home_site_id`, when given: a site operator's report)."""
    scope_ids = unit_ids
    if unit_id is not None:
        from accounts.service import subtree_ids

        scope_ids = subtree_ids(session, unit_id)
    occs = [o for o in occurrences_for_units(session, scope_ids, start, end)
            if o.starts_at <= now]
    q = select(Member)
    if scope_ids is not None:
        q = q.where(Member.org_unit_id.in_(scope_ids))
    if home_site_id is not None:
        q = q.where(Member.home_site_id == home_site_id)
    members = {m.id: m for m in session.scalars(q)}
    totals = member_totals(session, occs, config=config, now=now, member_filter=set(members))
    units = {u.id: u for u in session.scalars(select(OrgUnit).where(
        OrgUnit.id.in_({m.org_unit_id for m in members.values()})))}
    per_member, per_unit = [], defaultdict(lambda: {"expected": 0, "attended": 0,
                                                    "excused": 0, "members": 0})
    for mid, t in sorted(totals.items(), key=lambda kv: members[kv[0]].member_no):
        m = members[mid]
        per_member.append({"member": m, "unit": units.get(m.org_unit_id), **t,
                           "rate": rate(t["attended"], t["expected"], t["excused"])})
        u = per_unit[m.org_unit_id]
        u["members"] += 1
        for k in ("expected", "attended", "excused"):
            u[k] += t[k]
    branches = [{"unit": units.get(uid), **u, "rate": rate(u["attended"], u["expected"],
                                                           u["excused"])}
                for uid, u in sorted(per_unit.items())]
    return {"occurrences": occs, "members": per_member, "branches": branches}


def ledger(session: Session, *, year: int, unit_ids: list[int] | None,
           config: Mapping[str, Any], now: dt.datetime, tz: str) -> dict[str, Any]:
    """学时台账: live study hours per member in a year, make-up hours beside them."""
    from core.timeutil import zone

    z = zone(tz)
    start = dt.datetime(year, 1, 1, tzinfo=z).astimezone(dt.UTC)
    end = dt.datetime(year + 1, 1, 1, tzinfo=z).astimezone(dt.UTC)
    required = float(config.get("YUANJIAO_STUDY_HOURS_REQUIRED", 32))
    occs = [o for o in occurrences_for_units(session, unit_ids, start, end)
            if o.starts_at <= now]
    q = select(Member).where(Member.status == "active")
    if unit_ids is not None:
        q = q.where(Member.org_unit_id.in_(unit_ids))
    members = {m.id: m for m in session.scalars(q.order_by(Member.member_no))}
    totals = member_totals(session, occs, config=config, now=now, member_filter=set(members))
    makeup: dict[int, float] = defaultdict(float)
    occ_ids = [o.id for o in occs]
    if occ_ids:
        for task in session.scalars(select(MakeupTask).where(
                MakeupTask.occurrence_id.in_(occ_ids), MakeupTask.completed_at.is_not(None))):
            makeup[task.member_id] += task.seconds_watched / 3600.0
    units = {u.id: u for u in session.scalars(select(OrgUnit))}
    out = []
    for mid, m in members.items():
        live_h = round(totals.get(mid, {}).get("minutes", 0.0) / 60.0, 2)
        makeup_h = round(makeup.get(mid, 0.0), 2)
        total = round(live_h + makeup_h, 2)
        out.append({"member": m, "unit": units.get(m.org_unit_id), "live_hours": live_h,
                    "makeup_hours": makeup_h, "total_hours": total,
                    "shortfall": round(max(0.0, required - total), 2),
                    "short": total < required})
    return {"year": year, "required": required, "rows": out,
            "short_count": sum(1 for r in out if r["short"])}


# --- make-up study ------------------------------------------------------------------------


def recording_for(session: Session, occurrence_id: int):
    """The occurrence's recording (video's service when present, else the table)."""
    try:
        from video.service import recording_for_occurrence
    except ImportError:
        from video.models import Recording

        return session.scalar(select(Recording).where(
            Recording.occurrence_id == occurrence_id, Recording.status == "complete")
            .order_by(Recording.id.desc()).limit(1))
    return recording_for_occurrence(session, occurrence_id)


def ensure_makeup_tasks(session: Session, occurrence: Occurrence, *,
                        config: Mapping[str, Any], now: dt.datetime) -> list[MakeupTask]:
    """Make-up tasks for an ended occurrence's absentees (absent or on leave)."""
    if now < occurrence.ends_at:
        return []
    recording = recording_for(session, occurrence.id)
    if recording is None:
        return []
    existing = {t.member_id: t for t in session.scalars(select(MakeupTask).where(
        MakeupTask.occurrence_id == occurrence.id))}
    for member_id, rec in records(session, occurrence, config=config, now=now).items():
        if rec.status in ("absent", "excused") and member_id not in existing:
            task = MakeupTask(occurrence_id=occurrence.id, member_id=member_id,
                              recording_id=recording.id, watched_ranges=[], created_at=now,
                              updated_at=now)
            session.add(task)
            existing[member_id] = task
    session.flush()
    return list(existing.values())


def makeup_tasks_of_member(session: Session, member: Member, *, config: Mapping[str, Any],
                           now: dt.datetime, days: int = 366) -> list[MakeupTask]:
    """A member's make-up tasks, creating those due for recent occurrences he missed."""
    from video.models import Recording

    since = now - dt.timedelta(days=days)
    occs = session.scalars(select(Occurrence).where(
        Occurrence.ends_at <= now, Occurrence.starts_at >= since,
        Occurrence.status == "scheduled",
        Occurrence.id.in_(select(Recording.occurrence_id))))
    have = set(session.scalars(select(MakeupTask.occurrence_id).where(
        MakeupTask.member_id == member.id)))
    for occ in occs:
        if occ.id in have or not is_expected(session, occ, member.id):
            continue
        rec = records(session, occ, config=config, now=now, member_ids=[member.id])
        if rec[member.id].status in ("absent", "excused"):
            recording = recording_for(session, occ.id)
            if recording is not None:
                session.add(MakeupTask(occurrence_id=occ.id, member_id=member.id,
                                       recording_id=recording.id, watched_ranges=[],
                                       created_at=now, updated_at=now))
    session.flush()
    return list(session.scalars(select(MakeupTask).where(
        MakeupTask.member_id == member.id).order_by(MakeupTask.id.desc())))


def makeup_progress(session: Session, *, task: MakeupTask, ranges: Any, duration: float,
                    share: float, now: dt.datetime) -> MakeupTask:
    """Merge played ranges into the task; seeking ahead or replaying never counts twice.

    A client could claim to have played an hour in one heartbeat: the newly counted
    seconds are capped by the wall time since the previous heartbeat (plus slack).
    """
    if not isinstance(ranges, list) or len(ranges) > 500:
        raise ValidationError("ranges 需为 [[开始秒, 结束秒], ...]", field="ranges")
    clean = []
    for r in ranges:
        try:
            a, b = float(r[0]), float(r[1])
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise ValidationError("ranges 含无效区间", field="ranges") from exc
        if duration > 0:
            a, b = max(0.0, min(a, duration)), max(0.0, min(b, duration))
        if b > a:
            clean.append([a, b])
    old = R.merge_ranges(task.watched_ranges or [])
    old_total = sum(b - a for a, b in old)
    new_pieces = _minus(R.merge_ranges(clean), old)
    # The first heartbeat has no earlier one to measure from: allow a modest start.
    budget = ((now - task.updated_at).total_seconds() * 1.5 + 10 if task.watched_ranges
              else 60.0)
    accepted = []
    for a, b in new_pieces:
        if budget <= 0:
            break
        take = min(b - a, budget)
        accepted.append([a, a + take])
        budget -= take
    merged = R.merge_ranges(old + accepted)
    task.watched_ranges = merged
    task.seconds_watched = round(sum(b - a for a, b in merged), 1)
    task.updated_at = now
    if task.completed_at is None and duration > 0 and task.seconds_watched >= share * duration:
        task.completed_at = now
    log.debug("makeup %s: %.1f -> %.1f s", task.id, old_total, task.seconds_watched)
    session.flush()
    return task


def _minus(ranges: list[list[float]], holes: list[list[float]]) -> list[list[float]]:
    out = []
    for a, b in ranges:
        pieces = [[a, b]]
        for h0, h1 in holes:
            nxt = []
            for x, y in pieces:
                if h1 <= x or h0 >= y:
                    nxt.append([x, y])
                    continue
                if x < h0:
                    nxt.append([x, h0])
                if h1 < y:
                    nxt.append([h1, y])
            pieces = nxt
        out.extend(pieces)
    return out


def absentees(session: Session, occurrence: Occurrence, *, config: Mapping[str, Any],
              now: dt.datetime) -> list[dict[str, Any]]:
    """Absent and excused members, with their make-up status."""
    tasks = {t.member_id: t for t in ensure_makeup_tasks(session, occurrence, config=config,
                                                          now=now)}
    out = []
    for row in rows(session, occurrence, config=config, now=now):
        if row.record.status in ("absent", "excused"):
            out.append({"row": row, "task": tasks.get(row.member.id)})
    return out
