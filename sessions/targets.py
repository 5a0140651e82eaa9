"""Who an occurrence targets: its sites, its units, its members. The one owner of the rule.

A session names sites and org units. It targets:

- **units**: every named unit and every unit below it (a materialized-path prefix);
- **sites**: every named site, plus every *active* site of a targeted unit. A site under
  a targeted unit is where that unit's members meet, so its screen may play the lecture
  (WHEP) and its operator may take the roll call there: video and attendance ask
  `site_is_targeted` / `occurrence_site_ids` below, never a rule of their own;
- **members** (expected): active members of a targeted unit, and active members whose
  home site is a named site.

Schedule lists, calendar feeds and the room screen use the SQL forms of the same rule
(`sessions_targeting_site`, `sessions_for_member`, `sessions_for_org_unit`). Room
bookings (schedule conflicts) are the one exception: a clash is about a named room.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from org.models import Member, OrgUnit, Site
from sessions.models import Occurrence, StudySession, session_org_units, session_sites


def ancestor_ids(path: str) -> list[int]:
    """Ids on a materialized path "/1/4/9/" (the unit and every unit above it)."""
    return [int(p) for p in path.strip("/").split("/") if p]


# --- SQL clauses on StudySession ------------------------------------------------------------


def targets_units(unit_ids: Any) -> Any:
    """Sessions naming one of these units (a list or a SELECT of ids)."""
    return StudySession.id.in_(
        select(session_org_units.c.session_id).where(session_org_units.c.org_unit_id.in_(unit_ids))
    )


def targets_sites(site_ids: Any) -> Any:
    """Sessions naming one of these sites (a list or a SELECT of ids)."""
    return StudySession.id.in_(
        select(session_sites.c.session_id).where(session_sites.c.site_id.in_(site_ids))
    )


def sessions_targeting_site(session: Session, site_id: int) -> Any:
    """Sessions that target a site: naming it, or (an active site) a unit at or above it."""
    site = session.get(Site, site_id) if site_id else None
    if site is None:
        return StudySession.id.is_(None)
    if not site.active:
        return targets_sites([site.id])
    unit = session.get(OrgUnit, site.org_unit_id)
    above = ancestor_ids(unit.path) if unit is not None else [site.org_unit_id]
    return or_(targets_sites([site.id]), targets_units(above))


def sessions_for_member(member: Member) -> Any:
    """Sessions a member is expected at: aimed at his unit or above, or at his home site."""
    conditions = [targets_units(ancestor_ids(member.org_unit.path))]
    if member.home_site_id:
        conditions.append(targets_sites([member.home_site_id]))
    return or_(*conditions)


def sessions_for_org_unit(unit: OrgUnit) -> Any:
    """Sessions for a unit's members: aimed at it, above it or below it, or at its sites."""
    below = select(OrgUnit.id).where(OrgUnit.path.startswith(unit.path))
    return or_(targets_units(ancestor_ids(unit.path)), targets_units(below),
               targets_sites(select(Site.id).where(Site.org_unit_id.in_(below))))


# --- one occurrence -------------------------------------------------------------------------


def _unit_subtrees(occurrence: Occurrence) -> Any | None:
    """SELECT of the ids of the targeted units (named ones and all below), or None."""
    paths = [u.path for u in occurrence.session.org_units]
    if not paths:
        return None
    return select(OrgUnit.id).where(or_(*[OrgUnit.path.startswith(p) for p in paths]))


def occurrence_site_ids(session: Session, occurrence: Occurrence) -> list[int]:
    """Sites an occurrence targets: its named sites, and every active site of a targeted
    unit; ordered by id."""
    ids = {s.id for s in occurrence.session.sites}
    units = _unit_subtrees(occurrence)
    if units is not None:
        ids.update(session.scalars(
            select(Site.id).where(Site.org_unit_id.in_(units), Site.active.is_(True))))
    return sorted(ids)


def site_is_targeted(session: Session, occurrence: Occurrence, site: Site) -> bool:
    """Whether `site` is one of `occurrence_site_ids` (without listing them all)."""
    study = occurrence.session
    if any(s.id == site.id for s in study.sites):
        return True
    if not site.active or not study.org_units:
        return False
    unit = session.get(OrgUnit, site.org_unit_id)
    return unit is not None and any(unit.path.startswith(u.path) for u in study.org_units)


def occurrence_unit_ids(occurrence: Occurrence) -> set[int]:
    """Units whose managers answer for an occurrence: named units and named sites' units."""
    study = occurrence.session
    return {u.id for u in study.org_units} | {s.org_unit_id for s in study.sites}


def _expected_members(occurrence: Occurrence) -> Any | None:
    """SELECT of the ids of the members expected at an occurrence, or None (nobody)."""
    conditions = []
    units = _unit_subtrees(occurrence)
    if units is not None:
        conditions.append(Member.org_unit_id.in_(units))
    site_ids = [s.id for s in occurrence.session.sites]
    if site_ids:
        conditions.append(Member.home_site_id.in_(site_ids))
    if not conditions:
        return None
    return select(Member.id).where(Member.status == "active", or_(*conditions))


def expected_member_ids(session: Session, occurrence: Occurrence) -> list[int]:
    """Members expected at an occurrence: active members of the targeted org units (and
    every unit below them), and active members whose home site is a named site."""
    query = _expected_members(occurrence)
    if query is None:
        return []
    return list(session.scalars(query.order_by(Member.id)))


def is_expected(session: Session, occurrence: Occurrence, member_id: int) -> bool:
    """Whether one member is expected (one indexed row, not the whole roster: every viewer
    asks this when he starts watching)."""
    query = _expected_members(occurrence)
    return query is not None and session.scalar(
        query.where(Member.id == member_id).limit(1)) is not None
