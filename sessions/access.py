"""Who may see or edit a session, and the lookups that refuse what does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from accounts.models import User
from accounts.service import managed_org_unit_ids
from core.principals import SiteScreen
from org.models import OrgUnit, Site
from sessions.errors import Forbidden, NotFound
from sessions.models import (
    Occurrence,
    StudySession,
)
from sessions.targets import (
    sessions_for_member,
    sessions_targeting_site,
    targets_sites,
    targets_units,
)

CREATOR_ROLES = ("admin", "organizer")
TRAINER_ROLES = ("trainer", "admin")


# --- who sees what ------------------------------------------------------------------------


def visible_sessions_filter(session: Session, principal) -> Any | None:
    """A WHERE clause on StudySession for what `principal` may see; None means all.

    admin: all; organizer: sessions aimed at his subtree (units or their sites) or that he
    created; trainer: his own; site operator (and a site screen): those aimed at his site;
    member: those he is expected at.
    """
    if isinstance(principal, SiteScreen):
        return sessions_targeting_site(session, principal.site_id)
    role = principal.role
    if role == "admin":
        return None
    if role == "organizer":
        units = managed_org_unit_ids(session, principal) or []
        return or_(
            targets_units(units),
            targets_sites(select(Site.id).where(Site.org_unit_id.in_(units))),
            StudySession.created_by_id == principal.id,
        )
    if role == "trainer":
        return StudySession.trainer_id == principal.id
    if role == "site_operator":
        return sessions_targeting_site(session, principal.site_id or 0)
    if role == "member":
        member = principal.member
        if member is None:
            return StudySession.id.is_(None)
        return sessions_for_member(member)
    return StudySession.id.is_(None)


def can_view_session(session: Session, principal, study: StudySession) -> bool:
    clause = visible_sessions_filter(session, principal)
    if clause is None:
        return True
    return (session.scalar(
        select(func.count()).select_from(StudySession).where(StudySession.id == study.id, clause)
    ) or 0) > 0


def require_view(session: Session, principal, study: StudySession) -> None:
    if not can_view_session(session, principal, study):
        # Not 404: the caller named an id he cannot see; say so without details.
        raise Forbidden("无权查看该学习安排", details={"session_id": study.id})


def require_targets_in_scope(session: Session, actor: User, sites: Sequence[Site],
                             units: Sequence[OrgUnit]) -> None:
    """An organizer may aim a session only at units and sites inside his subtree."""
    if actor.role == "admin":
        return
    managed = set(managed_org_unit_ids(session, actor) or [])
    for unit in units:
        if unit.id not in managed:
            raise Forbidden(f"无权面向该组织安排学习：{unit.name}",
                            details={"field": "org_unit_ids", "org_unit_id": unit.id})
    for site in sites:
        if site.org_unit_id not in managed:
            raise Forbidden(f"无权面向该学习点安排学习：{site.name}",
                            details={"field": "site_ids", "site_id": site.id})


def can_edit_session(session: Session, actor, study: StudySession) -> bool:
    if isinstance(actor, SiteScreen) or actor.role not in CREATOR_ROLES:
        return False
    try:
        require_targets_in_scope(session, actor, study.sites, study.org_units)
    except Forbidden:
        return False
    return True


def require_edit(session: Session, actor, study: StudySession) -> None:
    if actor is None:
        return
    if not can_edit_session(session, actor, study):
        raise Forbidden("无权修改该学习安排", details={"session_id": study.id})


def get_session(session: Session, session_id: int) -> StudySession:
    study = session.get(StudySession, session_id)
    if study is None:
        raise NotFound(f"学习安排不存在：{session_id}", details={"session_id": session_id})
    return study


def get_occurrence(session: Session, occurrence_id: int) -> Occurrence:
    occ = session.get(Occurrence, occurrence_id)
    if occ is None:
        raise NotFound(f"场次不存在：{occurrence_id}", details={"occurrence_id": occurrence_id})
    return occ
