"""Scheduling rules: sessions, recurrence, occurrences, conflicts."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from org.models import Member, OrgUnit
from sessions.models import Occurrence


def expected_member_ids(session: Session, occurrence: Occurrence) -> list[int]:
    """Members expected at an occurrence: active members of the targeted org units (and
    every unit below them), and active members whose home site is a targeted site."""
    study = occurrence.session
    unit_paths = [u.path for u in study.org_units]
    site_ids = [s.id for s in study.sites]
    conditions = []
    if unit_paths:
        unit_ids = select(OrgUnit.id).where(or_(*[OrgUnit.path.startswith(p) for p in unit_paths]))
        conditions.append(Member.org_unit_id.in_(unit_ids))
    if site_ids:
        conditions.append(Member.home_site_id.in_(site_ids))
    if not conditions:
        return []
    return list(session.scalars(
        select(Member.id).where(Member.status == "active", or_(*conditions)).order_by(Member.id)
    ))
