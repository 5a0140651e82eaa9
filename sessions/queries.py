"""Lists of sessions and occurrences as a principal may see them, and the room screen's
current lecture."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from org.models import OrgUnit
from sessions.access import visible_sessions_filter
from sessions.errors import ValidationError
from sessions.models import (
    Occurrence,
    StudySession,
)
from sessions.targets import (
    sessions_for_org_unit,
    sessions_targeting_site,
    targets_units,
)

# --- queries --------------------------------------------------------------------------------------


def sessions_query(session: Session, principal, *, kind: str | None = None,
                   site_id: int | None = None, org_unit_id: int | None = None,
                   trainer_id: int | None = None, q: str | None = None):
    """The sessions `principal` may see, filtered, newest first."""
    query = select(StudySession).order_by(StudySession.starts_at.desc(), StudySession.id.desc())
    clause = visible_sessions_filter(session, principal)
    if clause is not None:
        query = query.where(clause)
    if kind:
        query = query.where(StudySession.kind == kind)
    if site_id:
        query = query.where(sessions_targeting_site(session, site_id))
    if org_unit_id:
        query = query.where(targets_units([org_unit_id]))
    if trainer_id:
        query = query.where(StudySession.trainer_id == trainer_id)
    if q:
        query = query.where(StudySession.title.contains(q))
    return query


def occurrences_query(session: Session, principal, *, start: dt.datetime | None = None,
                      end: dt.datetime | None = None, site_id: int | None = None,
                      org_unit_id: int | None = None, session_id: int | None = None,
                      include_cancelled: bool = True):
    """Occurrences the principal may see overlapping [start, end), in time order."""
    query = (select(Occurrence).join(StudySession)
             .order_by(Occurrence.starts_at, Occurrence.id))
    clause = visible_sessions_filter(session, principal)
    if clause is not None:
        query = query.where(clause)
    if start is not None:
        query = query.where(Occurrence.ends_at > start)
    if end is not None:
        query = query.where(Occurrence.starts_at < end)
    if site_id:
        query = query.where(sessions_targeting_site(session, site_id))
    if org_unit_id:
        unit = session.get(OrgUnit, org_unit_id)
        if unit is None:
            raise ValidationError(f"组织不存在：{org_unit_id}", field="org_unit_id")
        query = query.where(sessions_for_org_unit(unit))
    if session_id:
        query = query.where(Occurrence.session_id == session_id)
    if not include_cancelled:
        query = query.where(Occurrence.status != "cancelled")
    return query


#: A room screen switches to a lecture this long before it starts, and stays after its end.
SCREEN_LEAD = dt.timedelta(minutes=30)
SCREEN_TAIL = dt.timedelta(minutes=15)


def site_screen_occurrence(session: Session, site_id: int,
                           now: dt.datetime) -> tuple[Occurrence | None, bool]:
    """What a meeting room's screen should show: (occurrence, is_now).

    The scheduled occurrence aimed at the site that runs now (from SCREEN_LEAD before its
    start to SCREEN_TAIL after its end), else the next one, else (None, False).
    """
    at_site = (
        select(Occurrence)
        .join(StudySession, Occurrence.session_id == StudySession.id)
        .where(Occurrence.status == "scheduled", sessions_targeting_site(session, site_id))
    )
    current = session.scalars(
        at_site.where(Occurrence.starts_at <= now + SCREEN_LEAD,
                      Occurrence.ends_at >= now - SCREEN_TAIL)
        .order_by(Occurrence.starts_at).limit(1)
    ).first()
    if current is not None:
        return current, True
    upcoming = session.scalars(
        at_site.where(Occurrence.starts_at > now).order_by(Occurrence.starts_at).limit(1)
    ).first()
    return upcoming, False
