"""Scheduling rules: sessions, recurrence, occurrences, conflicts, and who sees what.

Every function takes the database session, plain values and an explicit `now`; it
validates, changes rows, flushes and returns. Views commit once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from flask import current_app, has_app_context
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from accounts.models import User
from accounts.service import managed_org_unit_ids
from core.api import SiteScreen
from core.timeutil import zone
from org.models import Member, OrgUnit, Site
from sessions import recurrence
from sessions.errors import Conflict, Forbidden, NotFound, ValidationError
from sessions.models import (
    OCCURRENCE_STATUSES,
    SESSION_KINDS,
    CalendarFeed,
    Occurrence,
    StudySession,
    session_org_units,
    session_sites,
)

log = logging.getLogger(__name__)

CREATOR_ROLES = ("admin", "organizer")
TRAINER_ROLES = ("trainer", "admin")
#: Fields a caller may give when creating or editing a session.
SESSION_FIELDS = (
    "title", "kind", "description", "trainer_id", "starts_at", "duration_minutes",
    "timezone", "rrule", "exdates", "site_ids", "org_unit_ids", "late_after_minutes",
    "present_threshold_percent", "video_bitrate_kbps", "video_height", "location",
)
DEFAULTS: dict[str, Any] = {
    "description": "", "trainer_id": None, "timezone": "Asia/Shanghai", "rrule": None,
    "exdates": [], "site_ids": [], "org_unit_ids": [], "late_after_minutes": 10,
    "present_threshold_percent": 80, "video_bitrate_kbps": 1200, "video_height": 480,
    "location": "", "kind": "other",
}


def horizon_days() -> int:
    """YUANJIAO_HORIZON_DAYS: how far ahead open-ended rules are materialized."""
    if has_app_context():
        return int(current_app.config.get("YUANJIAO_HORIZON_DAYS", 400))
    return 400


# --- members expected --------------------------------------------------------------------


def _expected_members(occurrence: Occurrence):
    """SELECT of the ids of the members expected at an occurrence, or None (nobody)."""
    study = occurrence.session
    unit_paths = [u.path for u in study.org_units]
    site_ids = [s.id for s in study.sites]
    conditions = []
    if unit_paths:
        unit_ids = select(OrgUnit.id).where(or_(*[OrgUnit.path.startswith(p) for p in unit_paths]))
        conditions.append(Member.org_unit_id.in_(unit_ids))
    if site_ids:
        conditions.append(Member.home_site_id.in_(site_ids))
    if not conditions:
        return None
    return select(Member.id).where(Member.status == "active", or_(*conditions))


def expected_member_ids(session: Session, occurrence: Occurrence) -> list[int]:
    """Members expected at an occurrence: active members of the targeted org units (and
    every unit below them), and active members whose home site is a targeted site."""
    query = _expected_members(occurrence)
    if query is None:
        return []
    return list(session.scalars(query.order_by(Member.id)))


def is_expected(session: Session, occurrence: Occurrence, member_id: int) -> bool:
    """Whether one member is expected (one indexed row, not the whole roster: every viewer
    asks this when he starts watching)."""
    query = _expected_members(occurrence)
    return query is not None and session.scalar(
        query.where(Member.id == member_id).limit(1)) is not None


# --- who sees what ------------------------------------------------------------------------


def _ancestor_ids(path: str) -> list[int]:
    """Ids on a materialized path "/1/4/9/" (the unit and every unit above it)."""
    return [int(p) for p in path.strip("/").split("/") if p]


def _targets_units(unit_ids) -> Any:
    return StudySession.id.in_(
        select(session_org_units.c.session_id).where(session_org_units.c.org_unit_id.in_(unit_ids))
    )


def _targets_sites(site_ids) -> Any:
    return StudySession.id.in_(
        select(session_sites.c.session_id).where(session_sites.c.site_id.in_(site_ids))
    )


def visible_sessions_filter(session: Session, principal) -> Any | None:
    """A WHERE clause on StudySession for what `principal` may see; None means all.

    admin: all; organizer: sessions aimed at his subtree (units or their sites) or that he
    created; trainer: his own; site operator (and a site screen): those aimed at his site;
    member: those he is expected at.
    """
    if isinstance(principal, SiteScreen):
        return _targets_sites([principal.site_id])
    role = principal.role
    if role == "admin":
        return None
    if role == "organizer":
        units = managed_org_unit_ids(session, principal) or []
        return or_(
            _targets_units(units),
            _targets_sites(select(Site.id).where(Site.org_unit_id.in_(units))),
            StudySession.created_by_id == principal.id,
        )
    if role == "trainer":
        return StudySession.trainer_id == principal.id
    if role == "site_operator":
        return _targets_sites([principal.site_id or 0])
    if role == "member":
        member = principal.member
        if member is None:
            return StudySession.id.is_(None)
        conditions = [_targets_units(_ancestor_ids(member.org_unit.path))]
        if member.home_site_id:
            conditions.append(_targets_sites([member.home_site_id]))
        return or_(*conditions)
    return StudySession.id.is_(None)


def can_view_session(session: Session, principal, study: StudySession) -> bool:
    clause = visible_sessions_filter(session, principal)
    if clause is None:
        return True
    return session.scalar(
        select(func.count()).select_from(StudySession).where(StudySession.id == study.id, clause)
    ) > 0


def require_view(session: Session, principal, study: StudySession) -> None:
    if not can_view_session(session, principal, study):
        # Not 404: the caller named an id he cannot see; say so without details.
        raise Forbidden("无权查看该学习安排", details={"session_id": study.id})


def _require_targets_in_scope(session: Session, actor: User, sites: Sequence[Site],
                              units: Sequence[OrgUnit]) -> None:
    if actor.role == "admin":
        return
    managed = set(managed_org_unit_ids(session, actor) or [])
    for unit in units:
        if unit.id not in managed:
            raise Forbidden(f"无权面向该组织安排学习：{unit.name}",
                            details={"field": "org_unit_ids", "org_unit_id": unit.id})
    for site in sites:
        if site.org_unit_id not in managed:
            raise Forbidden(f"无权面向该学习点安排学习：{site.name}",
                            details={"field": "site_ids", "site_id": site.id})


def can_edit_session(session: Session, actor, study: StudySession) -> bool:
    if isinstance(actor, SiteScreen) or actor.role not in CREATOR_ROLES:
        return False
    try:
        _require_targets_in_scope(session, actor, study.sites, study.org_units)
    except Forbidden:
        return False
    return True


def require_edit(session: Session, actor, study: StudySession) -> None:
    if actor is None:
        return
    if not can_edit_session(session, actor, study):
        raise Forbidden("无权修改该学习安排", details={"session_id": study.id})


def get_session(session: Session, session_id: int) -> StudySession:
    study = session.get(StudySession, session_id)
    if study is None:
        raise NotFound(f"学习安排不存在：{session_id}", details={"session_id": session_id})
    return study


def get_occurrence(session: Session, occurrence_id: int) -> Occurrence:
    occ = session.get(Occurrence, occurrence_id)
    if occ is None:
        raise NotFound(f"场次不存在：{occurrence_id}", details={"occurrence_id": occurrence_id})
    return occ


# --- validation ---------------------------------------------------------------------------


def _aware(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ValidationError(f"{field} 必须是时间", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} 需要带时区偏移（如 +08:00）", field=field)
    # iCalendar has whole seconds: keep no more, or feeds and rows would disagree.
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _int_in(data: dict, field: str, lo: int, hi: int) -> int:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{field} 必须是 {lo} 到 {hi} 之间的整数", field=field)
    return value


def _load_targets(session: Session, data: dict) -> tuple[list[Site], list[OrgUnit]]:
    sites, units = [], []
    for field, model, out, label in (("site_ids", Site, sites, "学习点"),
                                     ("org_unit_ids", OrgUnit, units, "组织")):
        ids = data.get(field) or []
        if not isinstance(ids, list | tuple):
            raise ValidationError(f"{field} 必须是列表", field=field)
        for raw in dict.fromkeys(ids):
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValidationError(f"{field} 中的 id 无效：{raw}", field=field)
            row = session.get(model, raw)
            if row is None:
                raise ValidationError(f"{label}不存在：{raw}", field=field,
                                      details={"id": raw})
            out.append(row)
    if not sites and not units:
        raise ValidationError("至少选择一个学习点或组织", field="site_ids")
    return sites, units


def _validate(session: Session, data: dict) -> dict:
    """Check a complete set of session fields; returns them normalized."""
    out = dict(data)
    title = (out.get("title") or "").strip()
    if not title or len(title) > 200:
        raise ValidationError("标题不能为空，且不超过 200 个字符", field="title")
    out["title"] = title
    if out.get("kind") not in SESSION_KINDS:
        raise ValidationError(f"未知的学习类型：{out.get('kind')}", field="kind",
                              details={"allowed": list(SESSION_KINDS)})
    out["description"] = out.get("description") or ""
    out["location"] = (out.get("location") or "")[:300]
    trainer_id = out.get("trainer_id")
    if trainer_id is not None:
        trainer = session.get(User, trainer_id) if isinstance(trainer_id, int) else None
        if trainer is None or not trainer.active or trainer.role not in TRAINER_ROLES:
            raise ValidationError(f"讲师不存在或不是讲师：{trainer_id}", field="trainer_id")
    tz_name = out.get("timezone") or "Asia/Shanghai"
    tz = zone(tz_name)
    if "/" not in tz_name and tz_name != "UTC":
        # Windows names ("China Standard Time") and abbreviations only on import.
        raise ValidationError(f"请使用 IANA 时区名称（如 Asia/Shanghai）：{tz_name}",
                              field="timezone")
    out["timezone"] = tz_name
    out["starts_at"] = _aware(out.get("starts_at"), "starts_at")
    out["duration_minutes"] = _int_in(out, "duration_minutes", 1, 1440)
    out["late_after_minutes"] = _int_in(out, "late_after_minutes", 0, 1440)
    out["present_threshold_percent"] = _int_in(out, "present_threshold_percent", 0, 100)
    out["video_bitrate_kbps"] = _int_in(out, "video_bitrate_kbps", 100, 20000)
    out["video_height"] = _int_in(out, "video_height", 144, 2160)
    exdates = out.get("exdates") or []
    if not isinstance(exdates, list | tuple):
        raise ValidationError("exdates 必须是时间列表", field="exdates")
    out["exdates"] = sorted({_aware(x, "exdates") for x in exdates})
    rule = out.get("rrule")
    if rule is not None and not str(rule).strip():
        rule = None
    if rule is not None:
        rule = recurrence.normalize_rrule(str(rule), tz)
        first = recurrence.first_start(rule, out["starts_at"], tz)
        if first is None:
            raise ValidationError("重复规则不产生任何场次", field="rrule")
        # DTSTART must be an instance of its own rule (RFC 5545 leaves the rest undefined):
        # a weekly-on-Wednesday rule entered with a Monday start begins on that Wednesday.
        out["starts_at"] = first
    out["rrule"] = rule
    out["sites"], out["org_units"] = _load_targets(session, out)
    return out


# --- materialization ------------------------------------------------------------------------


def _exdate_set(study: StudySession) -> set[dt.datetime]:
    return {dt.datetime.fromisoformat(x).astimezone(dt.UTC) for x in study.exdates or []}


def _wanted_starts(
    study: StudySession, now: dt.datetime, after: dt.datetime | None = None
) -> tuple[list[dt.datetime], dt.datetime | None]:
    """Rule starts up to the horizon (minus EXDATEs), and the new `materialized_until`."""
    tz = zone(study.timezone)
    if not study.rrule:
        starts = [study.starts_at] if after is None or study.starts_at > after else []
        return starts, None
    horizon_end = now + dt.timedelta(days=horizon_days())
    starts = recurrence.expand(study.rrule, study.starts_at, tz, until=horizon_end, after=after)
    more = recurrence.expand(study.rrule, study.starts_at, tz, after=horizon_end,
                             until=horizon_end + dt.timedelta(days=400), limit=1_000_000)
    until = horizon_end if more or recurrence.is_open_ended(study.rrule) else None
    excluded = _exdate_set(study)
    return [s for s in starts if s not in excluded], until


def _attended_ids(session: Session, ids: Iterable[int]) -> set[int]:
    """Occurrences with attendance (asked of the attendance domain, imported lazily)."""
    ids = list(ids)
    if not ids:
        return set()
    try:
        from attendance.service import occurrences_with_attendance
    except (ImportError, AttributeError):
        return set()
    return set(occurrences_with_attendance(session, ids))


def _sync_occurrences(session: Session, study: StudySession, now: dt.datetime, *,
                      is_new: bool) -> list[Occurrence]:
    """Make the occurrence rows match the rule; returns rows created or retimed.

    Never touched: occurrences already started or past, moved or cancelled ones
    (overrides), and those with attendance. Free rows keep their id when the time of day
    changes (paired by local date), so links and stream keys to them stay valid.
    """
    wanted, study.materialized_until = _wanted_starts(study, now)
    if not wanted and is_new:
        raise ValidationError("重复规则不产生任何场次（可能全部被排除）", field="rrule")
    duration = dt.timedelta(minutes=study.duration_minutes)
    rows = list(study.occurrences) if not is_new else []
    attended = _attended_ids(session, [r.id for r in rows if r.id is not None])
    by_start = {r.original_start: r for r in rows}
    protected = {r.id for r in rows
                 if r.overridden or r.starts_at <= now or r.id in attended}
    changed: list[Occurrence] = []
    missing = []
    for start in wanted:
        row = by_start.get(start)
        if row is None:
            if is_new or start > now:
                missing.append(start)
            continue
        if row.id not in protected and (row.starts_at != start or row.ends_at != start + duration):
            row.starts_at, row.ends_at = start, start + duration
            changed.append(row)
    wanted_set = set(wanted)
    tz = zone(study.timezone)
    spare: dict[dt.date, list[Occurrence]] = {}
    claimed: dict[dt.date, int] = {}
    for row in rows:
        if row.original_start in wanted_set:
            continue
        day = row.original_start.astimezone(tz).date()
        if row.id in protected:
            # A kept row (moved, attended, past) stands for the new rule's instance on its
            # day: creating another would book the same meeting twice.
            claimed[day] = claimed.get(day, 0) + 1
        else:
            spare.setdefault(day, []).append(row)
    for start in missing:
        day = start.astimezone(tz).date()
        if claimed.get(day):
            claimed[day] -= 1
            continue
        pool = spare.get(day)
        if pool:
            row = pool.pop(0)
            row.original_start, row.starts_at, row.ends_at = start, start, start + duration
            row.status = "scheduled"
        else:
            row = Occurrence(session=study, original_start=start, starts_at=start,
                             ends_at=start + duration, status="scheduled")
            session.add(row)
        changed.append(row)
    for pool in spare.values():
        for row in pool:
            study.occurrences.remove(row)
            session.delete(row)
    session.flush()
    return changed


def extend_horizons(session: Session, now: dt.datetime) -> int:
    """Materialize open-ended rules up to now + horizon; returns occurrences created.

    Called lazily when occurrences or feeds are read. It costs one indexed query when
    nothing is due: a series is extended only once its horizon falls a week short.
    """
    horizon_end = now + dt.timedelta(days=horizon_days())
    due = session.scalars(
        select(StudySession).where(
            StudySession.materialized_until.is_not(None),
            StudySession.materialized_until < horizon_end - dt.timedelta(days=7),
        )
    ).all()
    created = 0
    for study in due:
        starts, until = _wanted_starts(study, now, after=study.materialized_until)
        duration = dt.timedelta(minutes=study.duration_minutes)
        try:
            # A savepoint: two requests extending at once must not fail the reader.
            with session.begin_nested():
                for start in starts:
                    session.add(Occurrence(session_id=study.id, original_start=start,
                                           starts_at=start, ends_at=start + duration,
                                           status="scheduled"))
                study.materialized_until = until
        except IntegrityError:
            log.info("horizon of session %s extended concurrently", study.id)
            continue
        created += len(starts)
        log.info("extended session %s by %d occurrences", study.id, len(starts))
    return created


# --- conflicts -------------------------------------------------------------------------------


def find_conflicts(
    session: Session,
    intervals: Sequence[tuple[dt.datetime, dt.datetime]],
    *,
    site_ids: Iterable[int],
    trainer_id: int | None,
    exclude_session_id: int | None = None,
    exclude_occurrence_ids: Iterable[int] = (),
    limit: int = 10,
) -> list[dict]:
    """Booked occurrences overlapping any of `intervals` at one of the sites or with the
    trainer; each clash as a dict naming the occurrence, its session, start, and what
    clashes (a site or the trainer). Cancelled occurrences never clash."""
    site_ids = list(site_ids)
    intervals = sorted(i for i in intervals)
    if not intervals or (not site_ids and trainer_id is None):
        return []
    lo = intervals[0][0]
    hi = max(end for _, end in intervals)
    who = []
    if site_ids:
        who.append(_targets_sites(site_ids))
    if trainer_id is not None:
        who.append(StudySession.trainer_id == trainer_id)
    query = (
        select(Occurrence).join(StudySession)
        .where(Occurrence.status != "cancelled", Occurrence.starts_at < hi,
               Occurrence.ends_at > lo, or_(*who))
        .options(selectinload(Occurrence.session).selectinload(StudySession.sites))
        .order_by(Occurrence.starts_at)
    )
    if exclude_session_id is not None:
        query = query.where(Occurrence.session_id != exclude_session_id)
    excluded = set(exclude_occurrence_ids)
    starts = [s for s, _ in intervals]
    clashes: list[dict] = []
    site_set = set(site_ids)
    for other in session.scalars(query):
        if other.id in excluded:
            continue
        # Intervals are sorted by start; only those starting before `other` ends can overlap.
        idx = bisect_left(starts, other.ends_at)
        mine = next(((s, e) for s, e in intervals[:idx] if e > other.starts_at), None)
        if mine is None:
            continue
        study = other.session
        common = [s for s in study.sites if s.id in site_set]
        base = {
            "occurrence_id": other.id, "session_id": study.id, "session_title": study.title,
            "starts_at": other.starts_at.isoformat(), "ends_at": other.ends_at.isoformat(),
            "requested_starts_at": mine[0].isoformat(),
        }
        if common:
            clashes.append({**base, "kind": "site", "site_id": common[0].id,
                            "site_name": common[0].name})
        else:
            trainer = study.trainer
            clashes.append({**base, "kind": "trainer", "trainer_id": study.trainer_id,
                            "trainer_name": trainer.display_name if trainer else ""})
        if len(clashes) >= limit:
            break
    return clashes


def conflict_message(clash: dict, tz_name: str = "Asia/Shanghai") -> str:
    start = dt.datetime.fromisoformat(clash["starts_at"]).astimezone(zone(tz_name))
    what = (f"学习点「{clash['site_name']}」" if clash["kind"] == "site"
            else f"讲师「{clash['trainer_name']}」")
    return (f"时间冲突：{what}在 {start:%Y-%m-%d %H:%M} 已有安排「{clash['session_title']}」"
            f"（场次 #{clash['occurrence_id']}）")


def _raise_on_conflict(session: Session, study: StudySession, occurrences: Iterable[Occurrence],
                       *, same_session: bool = False) -> None:
    rows = [o for o in occurrences if o.status != "cancelled"]
    clashes = find_conflicts(
        session, [(o.starts_at, o.ends_at) for o in rows],
        site_ids=[s.id for s in study.sites], trainer_id=study.trainer_id,
        exclude_session_id=None if same_session else study.id,
        exclude_occurrence_ids=[o.id for o in rows if o.id is not None], limit=5,
    )
    if clashes:
        raise Conflict(conflict_message(clashes[0], study.timezone),
                       details={"conflict": clashes[0], "conflicts": clashes},
                       code="schedule_conflict")


# --- sessions ----------------------------------------------------------------------------------


def _apply(study: StudySession, data: dict) -> None:
    for field in ("title", "kind", "description", "trainer_id", "starts_at", "duration_minutes",
                  "timezone", "rrule", "late_after_minutes", "present_threshold_percent",
                  "video_bitrate_kbps", "video_height", "location"):
        setattr(study, field, data[field])
    study.exdates = [x.isoformat() for x in data["exdates"]]
    study.sites = list(data["sites"])
    study.org_units = list(data["org_units"])


def create_session(session: Session, actor: User | None, data: dict, *,
                   now: dt.datetime) -> StudySession:
    """Create a session and its occurrences; refused on a clash of site or trainer."""
    if actor is not None and actor.role not in CREATOR_ROLES:
        raise Forbidden("只有管理员和组织管理员可以安排学习", details={"role": actor.role})
    unknown = set(data) - set(SESSION_FIELDS)
    if unknown:
        raise ValidationError(f"未知字段：{', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    values = _validate(session, {**DEFAULTS, **data})
    if actor is not None:
        _require_targets_in_scope(session, actor, values["sites"], values["org_units"])
    study = StudySession(created_by_id=actor.id if actor else None, created_at=now,
                         updated_at=now, sequence=0)
    _apply(study, values)
    session.add(study)
    session.flush()
    created = _sync_occurrences(session, study, now, is_new=True)
    _raise_on_conflict(session, study, created)
    return study


def session_values(study: StudySession) -> dict:
    """A session's editable fields as `create_session` takes them."""
    return {
        "title": study.title, "kind": study.kind, "description": study.description,
        "trainer_id": study.trainer_id, "starts_at": study.starts_at,
        "duration_minutes": study.duration_minutes, "timezone": study.timezone,
        "rrule": study.rrule, "exdates": [dt.datetime.fromisoformat(x) for x in study.exdates],
        "site_ids": [s.id for s in study.sites], "org_unit_ids": [u.id for u in study.org_units],
        "late_after_minutes": study.late_after_minutes,
        "present_threshold_percent": study.present_threshold_percent,
        "video_bitrate_kbps": study.video_bitrate_kbps, "video_height": study.video_height,
        "location": study.location,
    }


def update_session(session: Session, actor: User | None, study: StudySession, changes: dict, *,
                   now: dt.datetime) -> StudySession:
    """Edit a series: future free occurrences follow the new rule; past, moved, cancelled
    and attended ones stay as they are. SEQUENCE is raised."""
    require_edit(session, actor, study)
    unknown = set(changes) - set(SESSION_FIELDS)
    if unknown:
        raise ValidationError(f"未知字段：{', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    values = _validate(session, {**session_values(study), **changes})
    if actor is not None:
        _require_targets_in_scope(session, actor, values["sites"], values["org_units"])
    _apply(study, values)
    study.sequence += 1
    study.updated_at = now
    _sync_occurrences(session, study, now, is_new=False)
    # Targets, trainer or times may have changed: every upcoming booked occurrence must fit.
    _raise_on_conflict(session, study, [o for o in study.occurrences if o.ends_at > now])
    return study


def delete_session(session: Session, actor: User | None, study: StudySession, *,
                   now: dt.datetime) -> None:
    """Delete a session with its occurrences; refused once any has attendance."""
    require_edit(session, actor, study)
    if _attended_ids(session, [o.id for o in study.occurrences]):
        raise Conflict("已有考勤记录的学习安排不能删除，可以取消以后的场次",
                       code="has_attendance", details={"session_id": study.id})
    session.delete(study)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("该学习安排仍被其他记录引用，不能删除", code="in_use",
                       details={"session_id": study.id}) from exc
    # The removal shows in no row's updated_at: every feed's Last-Modified moves on (one
    # statement; a feed that did not hold the session answers 200 once more, no harm).
    session.execute(update(CalendarFeed).values(changed_at=now))


def preview(session: Session, actor: User | None, data: dict, *, now: dt.datetime,
            session_id: int | None = None, count: int = 10) -> dict:
    """What a session form would create: the next starts and any clash; changes nothing."""
    base = session_values(get_session(session, session_id)) if session_id else dict(DEFAULTS)
    values = _validate(session, {**base, **data})
    tz = zone(values["timezone"])
    horizon = now + dt.timedelta(days=horizon_days())
    excluded = set(values["exdates"])
    starts = [s for s in recurrence.expand(values["rrule"], values["starts_at"], tz,
                                           until=horizon) if s not in excluded]
    duration = dt.timedelta(minutes=values["duration_minutes"])
    upcoming = [s for s in starts if s + duration > now] or starts[-1:]
    clashes = find_conflicts(
        session, [(s, s + duration) for s in (starts if session_id is None else upcoming)],
        site_ids=[s.id for s in values["sites"]], trainer_id=values["trainer_id"],
        exclude_session_id=session_id, limit=5,
    )
    return {
        "starts_at": values["starts_at"], "timezone": values["timezone"],
        "rrule": values["rrule"], "total": len(starts),
        "occurrences": [{"starts_at": s, "ends_at": s + duration} for s in upcoming[:count]],
        "conflicts": [{**c, "message": conflict_message(c, values["timezone"])} for c in clashes],
    }


# --- single occurrences --------------------------------------------------------------------------


def update_occurrence(session: Session, actor: User | None, occ: Occurrence, *,
                      starts_at: dt.datetime | None = None, status: str | None = None,
                      now: dt.datetime) -> Occurrence:
    """Move one occurrence (id and original start kept) and/or cancel or restore it."""
    study = occ.session
    require_edit(session, actor, study)
    if starts_at is None and status is None:
        raise ValidationError("请提供 starts_at 或 status", field="starts_at")
    if status is not None and status not in OCCURRENCE_STATUSES:
        raise ValidationError(f"未知状态：{status}", field="status",
                              details={"allowed": list(OCCURRENCE_STATUSES)})
    if starts_at is not None:
        starts_at = _aware(starts_at, "starts_at")
        duration = occ.ends_at - occ.starts_at
        occ.starts_at, occ.ends_at = starts_at, starts_at + duration
    if status is not None:
        occ.status = status
    occ.overridden = True
    occ.sequence += 1
    occ.updated_at = now
    # The series' SEQUENCE rises too, so that the feed's ETag and every override change.
    study.sequence += 1
    study.updated_at = now
    session.flush()
    if occ.status != "cancelled":
        _raise_on_conflict(session, study, [occ], same_session=True)
    return occ


# --- queries --------------------------------------------------------------------------------------


def sessions_query(session: Session, principal, *, kind: str | None = None,
                   site_id: int | None = None, org_unit_id: int | None = None,
                   trainer_id: int | None = None, q: str | None = None):
    """The sessions `principal` may see, filtered, newest first."""
    query = select(StudySession).order_by(StudySession.starts_at.desc(), StudySession.id.desc())
    clause = visible_sessions_filter(session, principal)
    if clause is not None:
        query = query.where(clause)
    if kind:
        query = query.where(StudySession.kind == kind)
    if site_id:
        query = query.where(_targets_sites([site_id]))
    if org_unit_id:
        query = query.where(_targets_units([org_unit_id]))
    if trainer_id:
        query = query.where(StudySession.trainer_id == trainer_id)
    if q:
        query = query.where(StudySession.title.contains(q))
    return query


def occurrences_query(session: Session, principal, *, start: dt.datetime | None = None,
                      end: dt.datetime | None = None, site_id: int | None = None,
                      org_unit_id: int | None = None, session_id: int | None = None,
                      include_cancelled: bool = True):
    """Occurrences the principal may see overlapping [start, end), in time order."""
    query = (select(Occurrence).join(StudySession)
             .order_by(Occurrence.starts_at, Occurrence.id))
    clause = visible_sessions_filter(session, principal)
    if clause is not None:
        query = query.where(clause)
    if start is not None:
        query = query.where(Occurrence.ends_at > start)
    if end is not None:
        query = query.where(Occurrence.starts_at < end)
    if site_id:
        query = query.where(_targets_sites([site_id]))
    if org_unit_id:
        unit = session.get(OrgUnit, org_unit_id)
        if unit is None:
            raise ValidationError(f"组织不存在：{org_unit_id}", field="org_unit_id")
        # Sessions for the unit's members: aimed at it, above it or below it, or its sites.
        below = select(OrgUnit.id).where(OrgUnit.path.startswith(unit.path))
        query = query.where(or_(
            _targets_units(_ancestor_ids(unit.path)), _targets_units(below),
            _targets_sites(select(Site.id).where(Site.org_unit_id.in_(below)))))
    if session_id:
        query = query.where(Occurrence.session_id == session_id)
    if not include_cancelled:
        query = query.where(Occurrence.status != "cancelled")
    return query


#: A room screen switches to a lecture this long before it starts, and stays after its end.
SCREEN_LEAD = dt.timedelta(minutes=30)
SCREEN_TAIL = dt.timedelta(minutes=15)


def site_screen_occurrence(session: Session, site_id: int,
                           now: dt.datetime) -> tuple[Occurrence | None, bool]:
    """What a meeting room's screen should show: (occurrence, is_now).

    The scheduled occurrence aimed at the site that runs now (from SCREEN_LEAD before its
    start to SCREEN_TAIL after its end), else the next one, else (None, False).
    """
    extend_horizons(session, now)
    at_site = (
        select(Occurrence)
        .join(StudySession, Occurrence.session_id == StudySession.id)
        .where(Occurrence.status == "scheduled",
               StudySession.sites.any(Site.id == site_id))
    )
    current = session.scalars(
        at_site.where(Occurrence.starts_at <= now + SCREEN_LEAD,
                      Occurrence.ends_at >= now - SCREEN_TAIL)
        .order_by(Occurrence.starts_at).limit(1)
    ).first()
    if current is not None:
        return current, True
    upcoming = session.scalars(
        at_site.where(Occurrence.starts_at > now).order_by(Occurrence.starts_at).limit(1)
    ).first()
    return upcoming, False


def occurrence_count(session: Session, study: StudySession) -> int:
    return session.scalar(select(func.count()).where(Occurrence.session_id == study.id)) or 0


def feed_sessions_filter(session: Session, kind: str, owner_id: int) -> Any:
    """A WHERE clause on StudySession for a feed owner (site, member, trainer, org unit)."""
    if kind == "site":
        return _targets_sites([owner_id])
    if kind == "trainer":
        return StudySession.trainer_id == owner_id
    if kind == "member":
        member = session.get(Member, owner_id)
        if member is None:
            return StudySession.id.is_(None)
        conditions = [_targets_units(_ancestor_ids(member.org_unit.path))]
        if member.home_site_id:
            conditions.append(_targets_sites([member.home_site_id]))
        return or_(*conditions)
    if kind == "org_unit":
        unit = session.get(OrgUnit, owner_id)
        if unit is None:
            return StudySession.id.is_(None)
        below = select(OrgUnit.id).where(OrgUnit.path.startswith(unit.path))
        return or_(_targets_units(_ancestor_ids(unit.path)), _targets_units(below),
                   _targets_sites(select(Site.id).where(Site.org_unit_id.in_(below))))
    raise ValidationError(f"未知的订阅类型：{kind}", field="kind")


# --- import ---------------------------------------------------------------------------------


def import_ics(session: Session, actor: User | None, content: bytes | str, *,
               site_ids: list[int], org_unit_ids: list[int], trainer_id: int | None = None,
               now: dt.datetime) -> tuple[list[StudySession], list[str], list[dict]]:
    """Create sessions from an .ics file (Outlook, Google, others), recurrence and moved or
    cancelled instances included. All or nothing: the caller commits only on success (and
    rolls back for a dry run).

    The file's own EXDATEs, moves and cancellations are applied before the conflict
    check, so an instance the file moves away never clashes where it no longer is. An
    event whose UID an earlier import created a session from updates that session
    (times, rule, texts, targets) instead of adding a second one.

    Returns the sessions created or updated, notes about what was skipped, and one
    change per event: {uid, title, action (created, updated, unchanged), session_id,
    occurrences}.
    """
    from sessions import ical

    if actor is not None and actor.role not in CREATOR_ROLES:
        raise Forbidden("只有管理员和组织管理员可以导入日历", details={"role": actor.role})
    try:
        events, notes = ical.parse_calendar(content)
    except ical.CalendarFileError as exc:
        raise ValidationError(str(exc), field="file", code="invalid_calendar") from exc
    if not events:
        why = "：" + "；".join(notes) if notes else ""
        raise ValidationError(f"日历文件中没有可导入的日程{why}", field="file",
                              code="invalid_calendar", details={"notes": notes})
    studies, changes = [], []
    for event in events:
        data = {
            "title": event.title, "description": event.description,
            "location": event.location, "starts_at": event.starts_at,
            "timezone": event.timezone, "duration_minutes": event.duration_minutes,
            "rrule": event.rrule, "exdates": event.exdates, "site_ids": list(site_ids),
            "org_unit_ids": list(org_unit_ids),
        }
        existing = _imported_before(session, actor, event.uid, site_ids, org_unit_ids)
        try:
            if existing is None:
                study = _imported_new(session, actor, {
                    **data, "kind": "other", "trainer_id": trainer_id}, event.uid, now)
                action = "created"
            else:
                study = existing
                if trainer_id is not None:
                    data["trainer_id"] = trainer_id
                action = "updated" if _imported_update(session, actor, study, data,
                                                       now) else "unchanged"
        except ValidationError as exc:
            field = exc.details.get("field")
            if field in ("site_ids", "org_unit_ids", "trainer_id"):
                raise
            raise ValidationError(f"日程「{event.title}」无法导入：{exc.message}", field="file",
                                  code="invalid_calendar",
                                  details={"event": event.title, "uid": event.uid,
                                           "event_field": field}) from exc
        if _apply_overrides(study, event, notes, now) and action == "unchanged":
            action = "updated"
        session.flush()
        rows = [o for o in study.occurrences if o.status != "cancelled"]
        if action != "created":
            rows = [o for o in rows if o.ends_at > now]
        _raise_on_conflict(session, study, rows)
        studies.append(study)
        changes.append({"uid": event.uid, "title": study.title, "action": action,
                        "session_id": study.id,
                        "occurrences": sum(1 for o in study.occurrences
                                           if o.status != "cancelled")})
    session.flush()
    return studies, notes, changes


def _imported_before(session: Session, actor: User | None, uid: str, site_ids: list[int],
                     org_unit_ids: list[int]) -> StudySession | None:
    """The session an earlier import of this UID created for the same audience (a site or
    org unit in common) and the actor may edit; None: this import creates its own."""
    if not uid:
        return None
    rows = session.scalars(select(StudySession).where(StudySession.import_uid == uid)
                           .order_by(StudySession.id)).all()
    for row in rows:
        if actor is not None and not can_edit_session(session, actor, row):
            continue
        if {s.id for s in row.sites} & set(site_ids) or \
                {u.id for u in row.org_units} & set(org_unit_ids):
            return row
    return None


def _imported_new(session: Session, actor: User | None, data: dict, uid: str,
                  now: dt.datetime) -> StudySession:
    """create_session without its conflict check (the import checks after overrides)."""
    values = _validate(session, {**DEFAULTS, **data})
    if actor is not None:
        _require_targets_in_scope(session, actor, values["sites"], values["org_units"])
    study = StudySession(created_by_id=actor.id if actor else None, created_at=now,
                         updated_at=now, sequence=0, import_uid=uid)
    _apply(study, values)
    session.add(study)
    session.flush()
    _sync_occurrences(session, study, now, is_new=True)
    return study


#: What an import sets; the rest (kind, attendance rules, video) stays as edited.
_IMPORTED_FIELDS = ("title", "description", "location", "starts_at", "timezone",
                    "duration_minutes", "rrule", "exdates", "sites", "org_units", "trainer_id")


def _imported_update(session: Session, actor: User | None, study: StudySession, data: dict,
                     now: dt.datetime) -> bool:
    """update_session without its conflict check; False when the file changes nothing."""
    require_edit(session, actor, study)
    values = _validate(session, {**session_values(study), **data})
    if actor is not None:
        _require_targets_in_scope(session, actor, values["sites"], values["org_units"])
    current = {**session_values(study), "sites": list(study.sites),
               "org_units": list(study.org_units)}
    current["exdates"] = sorted(x.astimezone(dt.UTC) for x in current["exdates"])
    if all(values[f] == current[f] for f in _IMPORTED_FIELDS):
        return False
    _apply(study, values)
    study.sequence += 1
    study.updated_at = now
    _sync_occurrences(session, study, now, is_new=False)
    return True


def _apply_overrides(study: StudySession, event, notes: list[str], now: dt.datetime) -> bool:
    """The file's RECURRENCE-ID overrides on the occurrence rows: moves, cancellations, and
    an instance's own title and description. True when a row changed."""
    changed = False
    by_original = {o.original_start: o for o in study.occurrences}
    for override in event.overrides:
        occ = by_original.get(override.recurrence_id)
        if occ is None:
            notes.append(f"日程「{event.title}」在 {override.recurrence_id:%Y-%m-%d %H:%M} UTC "
                         "的单次修改没有对应的场次，已跳过")
            continue
        # An override without SUMMARY or DESCRIPTION keeps the series' (exporters omit
        # what did not change); one with its own text keeps that text.
        title = override.title if override.title and override.title != study.title else None
        description = override.description if override.description and \
            override.description != study.description else None
        if override.cancelled:
            target = (occ.starts_at, occ.ends_at, "cancelled", title, description)
        else:
            target = (override.starts_at, override.ends_at, "scheduled", title, description)
        if (occ.starts_at, occ.ends_at, occ.status, occ.title_override,
                occ.description_override) == target:
            continue
        (occ.starts_at, occ.ends_at, occ.status, occ.title_override,
         occ.description_override) = target
        occ.overridden = True
        occ.sequence += 1
        occ.updated_at = now
        study.sequence += 1
        study.updated_at = now
        changed = True
    return changed


# --- calendar feeds ----------------------------------------------------------------------------

FEED_KINDS = ("site", "member", "trainer", "org_unit")
_FEED_SALT = "yuanjiao-calendar-feed"
#: Rendered feeds by ETag. The ETag is derived from the data, so an entry can never be
#: stale: any change gives a new key. Bounded, since every change leaves an orphan.
_feed_cache: OrderedDict[str, bytes] = OrderedDict()
_FEED_CACHE_SIZE = 128
#: Bump when the feed's format changes, so that clients and the cache start afresh.
_FEED_FORMAT = "4"


def _feed_owner(session: Session, kind: str, owner_id: int):
    model = {"site": Site, "member": Member, "trainer": User, "org_unit": OrgUnit}.get(kind)
    if model is None:
        raise ValidationError(f"未知的订阅类型：{kind}", field="kind")
    owner = session.get(model, owner_id)
    if owner is None or (kind == "trainer" and owner.role not in TRAINER_ROLES):
        raise NotFound(f"订阅对象不存在：{kind} {owner_id}")
    return owner


def require_feed_access(session: Session, principal, kind: str, owner_id: int) -> None:
    """Who may get (or revoke) a feed URL: the owner, whoever manages him, and admins."""
    from accounts.service import can_manage_org_unit, can_view_member, can_view_site

    owner = _feed_owner(session, kind, owner_id)
    if isinstance(principal, SiteScreen):
        allowed = kind == "site" and principal.site_id == owner_id
    elif principal.role == "admin":
        allowed = True
    elif kind == "site":
        allowed = can_view_site(session, principal, owner)
    elif kind == "member":
        allowed = can_view_member(session, principal, owner)
    elif kind == "trainer":
        allowed = principal.id == owner.id
    else:
        allowed = can_manage_org_unit(session, principal, owner.id) or (
            principal.role == "member" and principal.member is not None
            and principal.member.org_unit_id == owner.id)
    if not allowed:
        raise Forbidden("无权获取该日历订阅", details={"kind": kind, "id": owner_id})


def _feed_row(session: Session, kind: str, owner_id: int) -> CalendarFeed:
    row = session.scalar(select(CalendarFeed).where(CalendarFeed.owner_kind == kind,
                                                    CalendarFeed.owner_id == owner_id))
    if row is None:
        row = CalendarFeed(owner_kind=kind, owner_id=owner_id, nonce=secrets.token_urlsafe(16))
        session.add(row)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # created concurrently by another request
            row = session.scalar(select(CalendarFeed).where(
                CalendarFeed.owner_kind == kind, CalendarFeed.owner_id == owner_id))
    return row


def feed_token(session: Session, kind: str, owner_id: int, *, secret: str) -> str:
    """The signed token of a feed: {kind, id, nonce}; stable until revoked."""
    _feed_owner(session, kind, owner_id)
    row = _feed_row(session, kind, owner_id)
    return URLSafeSerializer(secret, salt=_FEED_SALT).dumps([kind, owner_id, row.nonce])


def revoke_feed(session: Session, kind: str, owner_id: int, *, secret: str) -> str:
    """A new nonce: every older URL of this feed stops working. Returns the new token."""
    _feed_owner(session, kind, owner_id)
    row = _feed_row(session, kind, owner_id)
    row.nonce = secrets.token_urlsafe(16)
    session.flush()
    return URLSafeSerializer(secret, salt=_FEED_SALT).dumps([kind, owner_id, row.nonce])


def resolve_feed(session: Session, token: str, *, secret: str) -> CalendarFeed:
    """The feed a token stands for, or NotFound (forged, malformed or revoked)."""
    try:
        kind, owner_id, nonce = URLSafeSerializer(secret, salt=_FEED_SALT).loads(token)
    except (BadSignature, ValueError, TypeError) as exc:
        raise NotFound("订阅地址无效") from exc
    row = session.scalar(select(CalendarFeed).where(CalendarFeed.owner_kind == kind,
                                                    CalendarFeed.owner_id == owner_id))
    if row is None or not secrets.compare_digest(row.nonce, str(nonce)):
        raise NotFound("订阅地址已失效（已被重置）", code="feed_revoked")
    return row


def feed_etag(session: Session, feed: CalendarFeed) -> str:
    """A cheap validator of a feed: counts and latest changes of its sessions and rows."""
    return feed_validators(session, feed)[0]


def feed_validators(session: Session, feed: CalendarFeed
                    ) -> tuple[str, dt.datetime | None]:
    """The feed's ETag, and its Last-Modified: the latest change of its sessions and
    occurrences (None for an empty feed)."""
    clause = feed_sessions_filter(session, feed.owner_kind, feed.owner_id)
    s_count, s_max = session.execute(
        select(func.count(StudySession.id), func.max(StudySession.updated_at)).where(clause)
    ).one()
    o_count, o_max = session.execute(
        select(func.count(Occurrence.id), func.max(Occurrence.updated_at))
        .join(StudySession).where(clause)
    ).one()
    raw = f"{_FEED_FORMAT}|{feed.owner_kind}|{feed.owner_id}|{s_count}|{s_max}|{o_count}|{o_max}"
    changes = [x if x.tzinfo else x.replace(tzinfo=dt.UTC)
               for x in (s_max, o_max, feed.changed_at) if isinstance(x, dt.datetime)]
    return hashlib.sha256(raw.encode()).hexdigest()[:32], max(changes, default=None)


def feed_name(session: Session, kind: str, owner_id: int) -> str:
    owner = _feed_owner(session, kind, owner_id)
    label = {"site": "学习点", "member": "党员", "trainer": "讲师", "org_unit": "组织"}[kind]
    name = owner.display_name if kind == "trainer" else owner.name
    return f"远教 · {label} · {name}"


def _feed_timezone(session: Session, kind: str, owner_id: int) -> str:
    owner = _feed_owner(session, kind, owner_id)
    if kind == "site":
        return owner.timezone
    if kind == "member" and owner.home_site is not None:
        return owner.home_site.timezone
    return "Asia/Shanghai"


def feed_body(session: Session, feed: CalendarFeed, etag: str) -> bytes:
    """The feed's iCalendar text, rendered once per ETag."""
    body = _feed_cache.get(etag)
    if body is not None:
        _feed_cache.move_to_end(etag)
        return body
    from sessions import ical

    studies = session.scalars(
        select(StudySession).where(feed_sessions_filter(session, feed.owner_kind, feed.owner_id))
        .options(selectinload(StudySession.occurrences), selectinload(StudySession.sites))
        .order_by(StudySession.id)
    ).all()
    cal = ical.build_calendar(list(studies),
                              name=feed_name(session, feed.owner_kind, feed.owner_id),
                              timezone=_feed_timezone(session, feed.owner_kind, feed.owner_id))
    body = ical.to_bytes(cal)
    _feed_cache[etag] = body
    while len(_feed_cache) > _FEED_CACHE_SIZE:
        _feed_cache.popitem(last=False)
    return body


def session_ics(study: StudySession) -> bytes:
    """One session as an .ics file (download or e-mail attachment)."""
    from sessions import ical

    cal = ical.build_calendar([study], name=study.title, timezone=study.timezone)
    return ical.to_bytes(cal)


# --- what the pages offer ------------------------------------------------------------------------


def form_choices(session: Session, user: User) -> dict:
    """Sites, org units and trainers a user may aim a session at."""
    units_q = select(OrgUnit).order_by(OrgUnit.path)
    sites_q = select(Site).where(Site.active.is_(True)).order_by(Site.id)
    managed = managed_org_unit_ids(session, user)
    if managed is not None:
        units_q = units_q.where(OrgUnit.id.in_(managed or [0]))
        sites_q = sites_q.where(Site.org_unit_id.in_(managed or [0]))
    trainers = session.scalars(select(User).where(User.role.in_(TRAINER_ROLES),
                                                  User.active.is_(True))
                               .order_by(User.role.desc(), User.id)).all()
    return {"org_units": session.scalars(units_q).all(), "sites": session.scalars(sites_q).all(),
            "trainers": trainers}


def feed_owners(session: Session, user: User, limit: int = 200) -> list[tuple[str, int, str]]:
    """Calendars a user may subscribe to: (kind, id, label), his own first."""
    out: list[tuple[str, int, str]] = []
    if user.role == "member" and user.member is not None:
        out.append(("member", user.member.id, f"我的日历（{user.member.name}）"))
        if user.member.home_site is not None:
            out.append(("site", user.member.home_site.id, f"学习点：{user.member.home_site.name}"))
        out.append(("org_unit", user.member.org_unit_id, f"组织：{user.member.org_unit.name}"))
    if user.role == "site_operator" and user.site is not None:
        out.append(("site", user.site.id, f"学习点：{user.site.name}"))
    if user.role in TRAINER_ROLES:
        out.append(("trainer", user.id, f"我的授课（{user.display_name or user.username}）"))
    managed = managed_org_unit_ids(session, user)
    if user.role in ("admin", "organizer"):
        units_q = select(OrgUnit).order_by(OrgUnit.path).limit(limit)
        sites_q = select(Site).order_by(Site.id).limit(limit)
        if managed is not None:
            units_q = units_q.where(OrgUnit.id.in_(managed or [0]))
            sites_q = sites_q.where(Site.org_unit_id.in_(managed or [0]))
        out += [("org_unit", u.id, f"组织：{u.name}") for u in session.scalars(units_q)]
        out += [("site", s.id, f"学习点：{s.name}") for s in session.scalars(sites_q)]
    return out
