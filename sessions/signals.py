"""Signals the scheduling domain sends, so that other domains react without being imported.

Scheduling never imports attendance, video or any domain above it: a domain that cares
connects a receiver in its own package (as Indico connects `session_deleted`), and the
connection is made when that package is imported (`models.py` imports every one).

- `occurrences_deleting` (sender = the database Session, occurrence_ids=[...]): sent
  before occurrence rows are deleted (a series deleted, or re-synced to a new rule).
  A receiver returns the ids among them that must be kept (attended ones, for the
  attendance domain), or an empty set. Scheduling keeps those rows when it re-syncs and
  refuses with 409 when it deletes a series. The database refuses too
  (`attendance_events.occurrence_id` is ON DELETE RESTRICT), should a receiver be missing.
- `session_deleted` (sender = the database Session, session_id=..., occurrence_ids=[...]):
  sent after a series and its occurrences were deleted (flushed, not committed).
"""

from __future__ import annotations

from collections.abc import Iterable

from blinker import Namespace
from sqlalchemy.orm import Session

signals = Namespace()
occurrences_deleting = signals.signal("occurrences-deleting")
session_deleted = signals.signal("session-deleted")


def protected_occurrence_ids(session: Session, occurrence_ids: Iterable[int]) -> set[int]:
    """Ids among `occurrence_ids` some domain wants kept (union of every receiver's answer)."""
    ids = [int(i) for i in occurrence_ids if i is not None]
    if not ids:
        return set()
    kept: set[int] = set()
    for _receiver, answer in occurrences_deleting.send(session, occurrence_ids=ids):
        kept.update(answer or ())
    return kept
