"""Schedule conflicts: a named site or the trainer booked twice at once."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from core.timeutil import DEFAULT_TZ, zone
from sessions.errors import Conflict
from sessions.models import (
    Occurrence,
    StudySession,
)
from sessions.targets import (
    targets_sites,
)

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
        who.append(targets_sites(site_ids))
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


def conflict_message(clash: dict, tz_name: str = DEFAULT_TZ) -> str:
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
