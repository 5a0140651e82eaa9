"""Derived records: one derivation of the log, leave and corrections, for the counters,
rows, snapshots and sheets.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.log import events_of, is_locked
from attendance.lookups import expected_member_ids, rules_for
from attendance.models import (
    STATUSES,
    AttendanceEvent,
    Correction,
    LeaveRequest,
    OccurrenceReview,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from config import Settings
from org.models import Member, Site
from sessions.models import Occurrence
from sessions.targets import occurrence_site_ids  # the targeting rule

log = logging.getLogger(__name__)

#: The statuses that count as attending (a late arrival or an early leave came).
ATTENDED = ("present", "late", "left_early")


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


def records(session: Session, occurrence: Occurrence, *, config: Settings,
            now: dt.datetime, member_ids: Iterable[int] | None = None,
            events: list[AttendanceEvent] | None = None,
            expected: list[int] | None = None) -> dict[int, R.MemberRecord]:
    """Every expected member's record (derived from the log, then corrected).

    `events` and `expected` are the occurrence's log and roster when the caller has
    them already (one read of the log per page or snapshot)."""
    if events is None:
        events = events_of(session, occurrence.id)
    if expected is None:
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


def site_offline_periods(occurrence: Occurrence, events: Iterable[AttendanceEvent], *,
                         config: Settings, now: dt.datetime
                         ) -> dict[int, list[tuple[dt.datetime, dt.datetime]]]:
    """Per site, when its screen/operator link was down beyond the grace period (站点离线),
    clipped to the occurrence. Reported beside the records; never a member's leave."""
    horizon = min(now, occurrence.ends_at)
    down = R.site_down_periods(events, horizon, rules_for(occurrence, config).grace_seconds)
    out = {}
    for site_id, periods in down.items():
        clipped = R.clip(periods, occurrence.starts_at, occurrence.ends_at)
        if clipped:
            out[site_id] = clipped
    return out


def _queued_member_ids(events: Iterable[AttendanceEvent]) -> set[int]:
    """Members with a mark queued offline and stored later (离线补传)."""
    return {e.member_id for e in events
            if e.member_id is not None and e.type in ("check_in", "check_out")
            and isinstance(e.payload, dict) and e.payload.get("queued")}


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


def rows(session: Session, occurrence: Occurrence, *, config: Settings,
         now: dt.datetime) -> list[Row]:
    """One row per expected member (and per walk-in), ordered by site then member number."""
    events = events_of(session, occurrence.id)
    roster = expected_member_ids(session, occurrence)
    recs = records(session, occurrence, config=config, now=now, events=events,
                   expected=roster)
    expected = set(roster)
    members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(recs)))}
    site_ids = {r.site_id for r in recs.values() if r.site_id} | {
        m.home_site_id for m in members.values() if m.home_site_id}
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(site_ids)))}
    overrides = overrides_of(session, occurrence.id)
    leave = {lr.member_id: lr for lr in session.scalars(select(LeaveRequest).where(
        LeaveRequest.occurrence_id == occurrence.id, LeaveRequest.status == "approved"))}
    queued = _queued_member_ids(events)
    offline = site_offline_periods(occurrence, events, config=config, now=now)
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


def snapshot(session: Session, occurrence: Occurrence, *, config: Settings,
             now: dt.datetime, with_names: bool = True,
             name_visible: Callable[[Member | None, int | None], bool] | None = None
             ) -> dict[str, Any]:
    """The live picture: per site the expected and present members; counts; lock.

    `name_visible` (see member_scope) blanks the names of members out of the caller's
    scope: they still count."""
    events = events_of(session, occurrence.id)  # read once: presence, sites, records
    here = R.present_now(events, now=now,
                         grace_seconds=rules_for(occurrence, config).grace_seconds)
    expected = expected_member_ids(session, occurrence)
    member_ids = set(expected) | set(here)
    members = {m.id: m for m in session.scalars(select(Member).where(
        Member.id.in_(member_ids)))}
    site_ids = occurrence_site_ids(session, occurrence)
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.id.in_(site_ids)))}
    online = _online_sites(events)
    offline = site_offline_periods(occurrence, events, config=config, now=now)
    per_site: dict[Any, dict[str, Any]] = {}

    def bucket(site_id: int | None) -> dict[str, Any]:
        key = site_id if site_id in sites else None
        if key not in per_site:
            site = sites.get(key) if key is not None else None
            per_site[key] = {"site_id": key, "name": site.name if site else "个人在线/其他",
                             "online": key in online, "expected": [], "present": [],
                             "offline_periods": [[a.isoformat(), b.isoformat()]
                                                 for a, b in (offline.get(key, [])
                                                              if key is not None else [])]}
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
    for mid, at_site in here.items():
        bucket(at_site)["present"].append(person(mid, at_site))
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
    recs = records(session, occurrence, config=config, now=now, events=events,
                   expected=expected)
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


def _online_sites(events: Iterable[AttendanceEvent]) -> set[int]:
    """Sites whose last screen/operator event is `site_online` (the log is in id order)."""
    state: dict[int, bool] = {}
    for e in events:
        if e.type in R.SITE_EVENTS and e.site_id is not None:
            state[e.site_id] = e.type == "site_online"
    return {s for s, on in state.items() if on}
