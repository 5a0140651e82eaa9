"""Make-up study: tasks for absentees, played ranges of the recording.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.errors import (
    ValidationError,
)
from attendance.lookups import is_expected
from attendance.models import (
    MakeupTask,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from attendance.records import records, rows
from config import Settings
from org.models import Member
from sessions.models import Occurrence

log = logging.getLogger(__name__)


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
                        config: Settings, now: dt.datetime) -> list[MakeupTask]:
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


def makeup_tasks_of_member(session: Session, member: Member, *, config: Settings,
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


def absentees(session: Session, occurrence: Occurrence, *, config: Settings,
              now: dt.datetime) -> list[dict[str, Any]]:
    """Absent and excused members, with their make-up status."""
    tasks = {t.member_id: t for t in ensure_makeup_tasks(session, occurrence, config=config,
                                                          now=now)}
    out = []
    for row in rows(session, occurrence, config=config, now=now):
        if row.record.status in ("absent", "excused"):
            out.append({"row": row, "task": tasks.get(row.member.id)})
    return out
