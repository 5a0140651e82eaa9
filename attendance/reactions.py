"""How attendance reacts to the other domains' signals (connected when `attendance` is
imported: the scheduling side never imports this package)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attendance.models import AttendanceEvent
from sessions.signals import occurrences_deleting


def occurrences_with_attendance(session: Session, occurrence_ids: Any) -> set[int]:
    """Ids among `occurrence_ids` that have any attendance event (protect them from edits)."""
    ids = list({int(i) for i in occurrence_ids})
    found: set[int] = set()
    # Chunks keep the IN list under SQLite's variable limit for long series.
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(session.scalars(
            select(AttendanceEvent.occurrence_id)
            .where(AttendanceEvent.occurrence_id.in_(chunk)).distinct()
        ))
    return found


@occurrences_deleting.connect
def keep_attended_occurrences(session: Session, occurrence_ids: list[int],
                              **_: Any) -> set[int]:
    """An occurrence with attendance events is never deleted: its log is the record."""
    return occurrences_with_attendance(session, occurrence_ids)
