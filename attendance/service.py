"""Attendance rules at the service level: append events, derive records, review."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from attendance.models import AttendanceEvent


def occurrences_with_attendance(session: Session, occurrence_ids: Iterable[int]) -> set[int]:
    """Ids among `occurrence_ids` that have any attendance event (protect them from edits)."""
    ids = list({int(i) for i in occurrence_ids})
    if not ids:
        return set()
    found: set[int] = set()
    # Chunks keep the IN list under SQLite's variable limit for long series.
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(session.scalars(
            select(AttendanceEvent.occurrence_id)
            .where(AttendanceEvent.occurrence_id.in_(chunk)).distinct()
        ))
    return found
