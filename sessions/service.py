"""Scheduling rules: sessions, recurrence, occurrences, conflicts, and who sees what.

Every function takes the database session, plain values and an explicit `now`; it
validates, changes rows, flushes and returns. Views commit once.

This module holds the writes of sessions and occurrences (create, edit, delete, move,
import) and what the forms offer; the rest lives in modules of their own, whose public
names stay importable from here:

- `sessions.access`: who may see or edit; `get_session`, `get_occurrence`
- `sessions.validation`: the fields of a session, checked
- `sessions.materialize`: occurrences from the rule, the horizon
- `sessions.conflicts`: site and trainer clashes
- `sessions.queries`: lists of sessions and occurrences, the room screen's lecture
- `sessions.feeds`: calendar feeds and .ics files
- `sessions.targets`: who an occurrence targets (sites, units, expected members)
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from accounts.models import User
from accounts.service import managed_org_unit_ids
from core.timeutil import zone
from org.models import OrgUnit, Site
from sessions import recurrence
from sessions.access import (  # noqa: F401  (public names re-exported)
    CREATOR_ROLES,
    TRAINER_ROLES,
    can_edit_session,
    can_view_session,
    get_occurrence,
    get_session,
    require_edit,
    require_targets_in_scope,
    require_view,
    visible_sessions_filter,
)
from sessions.conflicts import (
    _raise_on_conflict,
    conflict_message,
    find_conflicts,
)
from sessions.errors import Conflict, DomainError, Forbidden, ValidationError
from sessions.feeds import (  # noqa: F401
    _FEED_CACHE_SIZE,
    FEED_KINDS,
    _feed_cache,
    feed_body,
    feed_etag,
    feed_name,
    feed_sessions_filter,
    feed_token,
    feed_validators,
    require_feed_access,
    resolve_feed,
    revoke_feed,
    session_ics,
)
from sessions.materialize import (  # noqa: F401
    _attended_ids,
    _sync_occurrences,
    deleting,
    extend_horizons,
    horizon_days,
)
from sessions.models import (
    OCCURRENCE_STATUSES,
    CalendarFeed,
    Occurrence,
    StudySession,
)
from sessions.queries import (  # noqa: F401
    SCREEN_LEAD,
    SCREEN_TAIL,
    occurrences_query,
    sessions_query,
    site_screen_occurrence,
)
from sessions.signals import session_deleted
from sessions.targets import (  # noqa: F401
    expected_member_ids,
    is_expected,
    sessions_for_member,
    sessions_for_org_unit,
    sessions_targeting_site,
    targets_sites,
    targets_units,
)
from sessions.validation import DEFAULTS, SESSION_FIELDS, _aware, _validate

log = logging.getLogger(__name__)


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
        require_targets_in_scope(session, actor, values["sites"], values["org_units"])
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
        require_targets_in_scope(session, actor, values["sites"], values["org_units"])
    _apply(study, values)
    study.sequence += 1
    study.updated_at = now
    _sync_occurrences(session, study, now, is_new=False)
    # Targets, trainer or times may have changed: every upcoming booked occurrence must fit.
    _raise_on_conflict(session, study, [o for o in study.occurrences if o.ends_at > now])
    return study


def delete_session(session: Session, actor: User | None, study: StudySession, *,
                   now: dt.datetime) -> None:
    """Delete a session with its occurrences; refused (409, nothing deleted) once any has
    attendance."""
    require_edit(session, actor, study)
    occurrence_ids = [o.id for o in study.occurrences]
    attended = _attended_ids(session, occurrence_ids)
    if attended:
        raise Conflict("已有考勤记录的学习安排不能删除，可以取消以后的场次",
                       code="has_attendance",
                       details={"session_id": study.id, "occurrence_ids": sorted(attended)})
    session_id = study.id
    with deleting(session, session_id, occurrence_ids):
        session.delete(study)
    session_deleted.send(session, session_id=session_id, occurrence_ids=occurrence_ids)
    # The removal shows in no row's updated_at: every feed's Last-Modified moves on (one
    # statement; a feed that did not hold the session answers 200 once more, no harm).
    session.execute(update(CalendarFeed).values(changed_at=now))


def upcoming_starts(study: StudySession, now: dt.datetime) -> dict[int, dt.datetime]:
    """A series' booked, not yet started occurrences: id -> start."""
    return {o.id: o.starts_at for o in study.occurrences
            if o.id is not None and o.status == "scheduled" and o.starts_at > now}


def occurrence_changes(before: dict[int, dt.datetime], after: dict[int, dt.datetime]
                       ) -> dict[str, Any]:
    """What an edit did to the booked occurrences: dropped, moved (same row, new time),
    added (the views say it in the reader's language)."""
    moved = sorted((before[k], after[k]) for k in before.keys() & after.keys()
                   if before[k] != after[k])
    return {"dropped": sorted(v for k, v in before.items() if k not in after),
            "moved": [{"from": a, "to": b} for a, b in moved],
            "added": sum(1 for k in after if k not in before)}


def _edit_changes(session: Session, actor: User | None, study: StudySession, data: dict,
                  now: dt.datetime) -> dict[str, Any] | None:
    """`occurrence_changes` of an edit, tried in a savepoint and rolled back."""
    before = upcoming_starts(study, now)
    nested = session.begin_nested()
    try:
        update_session(session, actor, study, data, now=now)
        session.flush()
        after = upcoming_starts(study, now)
    except DomainError:
        return None  # the conflicts and errors are reported on their own
    finally:
        nested.rollback()
    return occurrence_changes(before, after)


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
    changes = (_edit_changes(session, actor, get_session(session, session_id), data, now)
                if session_id else None)
    return {
        "changes": changes,
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


# --- import ---------------------------------------------------------------------------------


#: Events one .ics import may hold (YUANJIAO_ICS_MAX_EVENTS): a plan for a year of
#: branches is a few hundred; 50,000 took 107 s while check-ins waited.
MAX_IMPORT_EVENTS = 2000


def import_ics(session: Session, actor: User | None, content: bytes | str, *,
               site_ids: list[int], org_unit_ids: list[int], trainer_id: int | None = None,
               now: dt.datetime, max_events: int = MAX_IMPORT_EVENTS
               ) -> tuple[list[StudySession], list[str], list[dict]]:
    """Create sessions from an .ics file (Outlook, Google, others), recurrence and moved or
    cancelled instances included. All or nothing: the caller commits only on success (and
    rolls back for a dry run).

    The file's own EXDATEs, moves and cancellations are applied before the conflict
    check, so an instance the file moves away never clashes where it no longer is. An
    event whose UID an earlier import created a session from updates that session
    (times, rule, texts, targets) instead of adding a second one. A file with more than
    `max_events` events is refused before it is parsed.

    Returns the sessions created or updated, notes about what was skipped, and one
    change per event: {uid, title, action (created, updated, unchanged), session_id,
    occurrences}.
    """
    from sessions import ical

    if actor is not None and actor.role not in CREATOR_ROLES:
        raise Forbidden("只有管理员和组织管理员可以导入日历", details={"role": actor.role})
    count = (content.upper().count(b"BEGIN:VEVENT") if isinstance(content, bytes)
             else content.upper().count("BEGIN:VEVENT"))
    if count > max_events:
        raise ValidationError(f"日历文件中的日程过多：{count} 个（一次最多导入 {max_events} 个）",
                              field="file", code="too_many_events",
                              details={"events": count, "limit": max_events})
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
        require_targets_in_scope(session, actor, values["sites"], values["org_units"])
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
        require_targets_in_scope(session, actor, values["sites"], values["org_units"])
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
