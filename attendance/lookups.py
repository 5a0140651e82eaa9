"""Lookups: occurrences, sites and members by id; the rules an occurrence is judged
by; who is expected.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.errors import (
    NotFound,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from config import Settings
from core.converters import MAX_ID
from org import service as org_service
from org.models import Member, Site
from sessions import service as sessions_service
from sessions.models import Occurrence

log = logging.getLogger(__name__)


def get_occurrence(session: Session, occurrence_id: int) -> Occurrence:
    """The occurrence, or NotFound (the sessions domain owns occurrences)."""
    return sessions_service.get_occurrence(session, occurrence_id)


def get_site(session: Session, site_id: Any) -> Site:
    """The site named by a client-sent id (the org domain owns sites)."""
    return org_service.get_site(session, None, _client_id(site_id, "学习点", "site_id"))


def get_member(session: Session, member_id: Any) -> Member:
    """The member named by a client-sent id (the org domain owns the roster)."""
    return org_service.get_member(session, None, _client_id(member_id, "党员", "member_id"))


def _client_id(value: Any, what: str, field: str) -> int:
    """An id from a socket payload or form: anything not an integer names nothing."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise NotFound(f"{what}不存在：{str(value)[:40]}", details={field: str(value)[:40]}) \
            from None
    if isinstance(value, bool) or not 0 < number <= MAX_ID:
        raise NotFound(f"{what}不存在：{str(value)[:40]}", details={field: str(value)[:40]})
    return number


def rules_for(occurrence: Occurrence, config: Settings) -> R.Rules:
    """The thresholds of an occurrence, from its session and the app settings."""
    study = occurrence.session
    return R.Rules(
        late_after_minutes=study.late_after_minutes,
        present_threshold_percent=study.present_threshold_percent,
        left_early_minutes=config.left_early_minutes,
        grace_seconds=config.attendance_grace_seconds,
    )


def expected_member_ids(session: Session, occurrence: Occurrence) -> list[int]:
    return sessions_service.expected_member_ids(session, occurrence)


def is_expected(session: Session, occurrence: Occurrence, member_id: int) -> bool:
    return sessions_service.is_expected(session, occurrence, member_id)
