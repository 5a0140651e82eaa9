"""Reports and the study-hours ledger.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.models import (
    MakeupTask,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from attendance.records import ATTENDED, N_, records
from config import Settings
from org.models import Member, OrgUnit, Site
from sessions.models import Occurrence

log = logging.getLogger(__name__)




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
                  config: Settings, now: dt.datetime,
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
           start: dt.datetime, end: dt.datetime, config: Settings,
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
    per_member: list[dict[str, Any]] = []
    per_unit: defaultdict[int, dict[str, float]] = defaultdict(
        lambda: {"expected": 0, "attended": 0, "excused": 0, "members": 0})
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
           config: Settings, now: dt.datetime, tz: str) -> dict[str, Any]:
    """学时台账: live study hours per member in a year, make-up hours beside them."""
    from core.timeutil import zone

    z = zone(tz)
    start = dt.datetime(year, 1, 1, tzinfo=z).astimezone(dt.UTC)
    end = dt.datetime(year + 1, 1, 1, tzinfo=z).astimezone(dt.UTC)
    required = config.study_hours_required
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
