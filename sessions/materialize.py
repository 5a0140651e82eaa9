"""Occurrence rows made to match a series' rule, and open-ended rules kept materialized
ahead (the horizon). Attended rows are never deleted (sessions/signals.py)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from flask import has_app_context
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import Settings, settings
from core.timeutil import zone
from sessions import recurrence
from sessions.errors import Conflict, ValidationError
from sessions.models import (
    Occurrence,
    StudySession,
)
from sessions.signals import protected_occurrence_ids

log = logging.getLogger(__name__)


def horizon_days() -> int:
    """YUANJIAO_HORIZON_DAYS: how far ahead open-ended rules are materialized."""
    return (settings() if has_app_context() else Settings()).horizon_days


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
    """Occurrences another domain wants kept (attended ones): asked by a signal, so that
    scheduling never imports attendance. The database's RESTRICT key backs this up."""
    return protected_occurrence_ids(session, ids)


@contextmanager
def deleting(session: Session, session_id: int, occurrence_ids: list[int]) -> Iterator[None]:
    """Delete occurrences (in the block) inside a savepoint, and flush them. A row still
    referenced elsewhere (attendance events are ON DELETE RESTRICT: the database's own
    guard) refuses with 409 naming the referencing tables; the savepoint is rolled back,
    the rest of the caller's transaction stays usable."""
    nested = session.begin_nested()  # flushes the changes made before it
    try:
        yield
        session.flush()
    except IntegrityError as exc:
        nested.rollback()
        held = _referenced_by(session, occurrence_ids)
        attended = "attendance_events" in held
        raise Conflict(
            "已有考勤记录的学习安排不能删除，可以取消以后的场次" if attended
            else "该学习安排的场次仍被其他记录引用，不能删除",
            code="has_attendance" if attended else "in_use",
            details={"session_id": session_id, "referenced_by": held}) from exc
    except BaseException:
        nested.rollback()
        raise
    nested.commit()


def _referenced_by(session: Session, occurrence_ids: list[int]) -> list[str]:
    """Tables (of any domain, found from the metadata) with rows pointing at these ids."""
    if not occurrence_ids:
        return []
    held = []
    for table in Occurrence.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "occurrences" and session.scalar(
                    select(func.count()).select_from(table)
                    .where(fk.parent.in_(occurrence_ids[:500]))):
                held.append(table.name)
    return sorted(set(held))


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
    dropped = [row for pool in spare.values() for row in pool]
    with deleting(session, study.id, [row.id for row in dropped]):
        for row in dropped:
            study.occurrences.remove(row)
            session.delete(row)
    return changed


def extend_horizons(session: Session, now: dt.datetime) -> int:
    """Materialize open-ended rules up to now + horizon; returns occurrences created.

    Run at start-up, once a day and by `flask extend-horizons` (sessions/jobs.py), never
    by a read. It costs one indexed query when nothing is due: a series is extended only
    once its horizon falls a week short.
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
