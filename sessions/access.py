"""Who may see or edit a session, and the lookups that refuse what does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from accounts.access import can_manage_org_unit, can_operate_site, has_role
from accounts.models import User
from accounts.service import managed_org_unit_ids
from core import authepoch, policy
from core.principals import SiteScreen, is_system
from org.models import Member, OrgUnit, Site
from sessions.errors import Forbidden, NotFound, ValidationError
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
    if is_system(principal):
        return None
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


def require_targets_in_scope(session: Session, actor: Any, sites: Sequence[Site],
                             units: Sequence[OrgUnit]) -> None:
    """An organizer may aim a session only at units and sites inside his subtree."""
    if is_system(actor) or actor.role == "admin":
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
    if actor is None:
        return False
    if is_system(actor):
        return True
    if isinstance(actor, SiteScreen) or actor.role not in CREATOR_ROLES:
        return False
    try:
        require_targets_in_scope(session, actor, study.sites, study.org_units)
    except Forbidden:
        return False
    return True


def require_edit(session: Session, actor, study: StudySession) -> None:
    """Refuse unless `actor` may edit `study` (the system principal may; nobody may not)."""
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


# --- calendar feeds ------------------------------------------------------------------------


def _feed_owner(session: Session, kind: str, owner_id: int):
    model = {"site": Site, "member": Member, "trainer": User, "org_unit": OrgUnit}.get(kind)
    if model is None:
        raise ValidationError(f"未知的订阅类型：{kind}", field="kind")
    owner = session.get(model, owner_id)
    if owner is None or (isinstance(owner, User) and owner.role not in TRAINER_ROLES):
        raise NotFound(f"订阅对象不存在：{kind} {owner_id}")
    return owner


def require_feed_access(session: Session, principal, kind: str, owner_id: int, *,
                        revoke: bool = False) -> None:
    """Who may get (or, with `revoke`, reset) a feed URL.

    The owner (the member himself, the trainer himself, the site's operator or screen)
    and those who manage him (organizers of his subtree, admins) may both. A member may
    also read, never reset, the shared calendars of his home site and his org unit.
    Trainers read only their own.
    """
    owner = _feed_owner(session, kind, owner_id)
    if isinstance(principal, SiteScreen):
        allowed = kind == "site" and principal.site_id == owner_id and not revoke
    elif principal.role == "admin":
        allowed = True
    elif kind == "site":
        member = principal.member if principal.role == "member" else None
        allowed = can_operate_site(session, principal, owner) or (
            not revoke and member is not None and member.home_site_id == owner.id)
    elif kind == "member":
        allowed = principal.member_id == owner.id or (
            principal.role == "organizer" and can_manage_org_unit(session, principal,
                                                                  owner.org_unit_id))
    elif kind == "trainer":
        allowed = principal.id == owner.id
    else:
        member = principal.member if principal.role == "member" else None
        allowed = (principal.role == "organizer"
                   and can_manage_org_unit(session, principal, owner.id)) or (
            not revoke and member is not None and member.org_unit_id == owner.id)
    if not allowed:
        raise Forbidden("无权重置该日历订阅" if revoke else "无权获取该日历订阅",
                        details={"kind": kind, "id": owner_id})



def feed_owners(session: Session, user: User, limit: int = 200) -> list[tuple[str, int, str]]:
    """Calendars a user may subscribe to: (kind, id, label), his own first."""
    out: list[tuple[str, int, str]] = []
    if user.role == "member" and user.member is not None:
        out.append(("member", user.member.id, f"我的日历（{user.member.name}）"))
        if user.member.home_site is not None:
            out.append(("site", user.member.home_site.id, f"学习点：{user.member.home_site.name}"))
        out.append(("org_unit", user.member.org_unit_id, f"组织：{user.member.org_unit.name}"))
    if user.role == "site_operator" and user.site is not None:
        out.append(("site", user.site.id, f"学习点：{user.site.name}"))
    if user.role in TRAINER_ROLES:
        out.append(("trainer", user.id, f"我的授课（{user.display_name or user.username}）"))
    managed = managed_org_unit_ids(session, user)
    if user.role in ("admin", "organizer"):
        units_q = select(OrgUnit).order_by(OrgUnit.path).limit(limit)
        sites_q = select(Site).order_by(Site.id).limit(limit)
        if managed is not None:
            units_q = units_q.where(OrgUnit.id.in_(managed or [0]))
            sites_q = sites_q.where(Site.org_unit_id.in_(managed or [0]))
        out += [("org_unit", u.id, f"组织：{u.name}") for u in session.scalars(units_q)]
        out += [("site", s.id, f"学习点：{s.name}") for s in session.scalars(sites_q)]
    return out


# --- what an occurrence's row offers -------------------------------------------------------


def occurrence_links(principal: Any, study: StudySession) -> dict[str, Any]:
    """Which of an occurrence's pages a row offers the caller (sessions.views builds
    them): broadcast (the trainer's or an admin's), his room (a site operator's screen,
    roll call and sign-in sheet), every named site's screen and the attendance dashboard
    (those who schedule), watch (all but operators); and which is primary."""
    trainer = principal.id == study.trainer_id
    schedules = has_role(principal, *CREATOR_ROLES)
    room = has_role(principal, "site_operator") and bool(principal.site_id)
    return {
        "broadcast": has_role(principal, "admin") or trainer,
        "broadcast_primary": has_role(principal, "trainer") or trainer,
        "room_site_id": principal.site_id if room else None,
        "site_screens": schedules and not room,
        "attendance": schedules,
        "attendance_primary": has_role(principal, "organizer") or not trainer,
        "watch": has_role(principal, "member", "admin", "organizer", "trainer"),
        "watch_primary": has_role(principal, "member"),
    }


# --- the actions of sessions (docs/authorization.md) --------------------------------------


@policy.register("session.list", roles={"admin": "all", "organizer": "aimed at his subtree",
                                        "trainer": "his own"},
                 refuse="当前角色无权访问此页面")
def _session_list(_session: Session, principal: Any, _resource: Any) -> bool:
    """The sessions list and the calendar page (others see their calendar only)."""
    return has_role(principal, "admin", "organizer", "trainer")


@policy.register("session.create", roles={"admin": "all", "organizer": "aimed at his subtree"},
                 refuse="只有管理员和组织管理员可以安排学习")
def _session_create(_session: Session, principal: Any, _resource: Any) -> bool:
    """Schedule a lesson (and the pages and links of those who schedule)."""
    return has_role(principal, *CREATOR_ROLES)


@policy.register("session.import", roles={"admin": "all", "organizer": "aimed at his subtree"},
                 refuse="只有管理员和组织管理员可以导入日历")
def _session_import(_session: Session, principal: Any, _resource: Any) -> bool:
    """Import an .ics file of sessions."""
    return has_role(principal, *CREATOR_ROLES)


@policy.register("session.view", roles={
    "admin": "all", "organizer": "aimed at his subtree or his own", "trainer": "his own",
    "site_operator": "aimed at his site", "site_screen": "aimed at its site",
    "member": "he is expected at"},
    refuse=lambda _p, study: Forbidden("无权查看该学习安排", details={"session_id": study.id}))
def _session_view(session: Session, principal: Any, study: Any) -> bool:
    return can_view_session(session, principal, study)


@policy.register("session.edit", roles={"admin": "all", "organizer": "aimed at his subtree"},
                 refuse=lambda _p, study: Forbidden("无权修改该学习安排",
                                                    details={"session_id": study.id}))
def _session_edit(session: Session, principal: Any, study: Any) -> bool:
    """Edit, move, delete a session or one of its occurrences."""
    return can_edit_session(session, principal, study)


@policy.register("session.teach", roles={"admin": "all", "trainer": "his own"},
                 refuse="该用户不能担任主讲人")
def _session_teach(_session: Session, principal: Any, _resource: Any) -> bool:
    """Be a session's trainer (the one who broadcasts it)."""
    return has_role(principal, *TRAINER_ROLES)


def _require_feed(session: Session, principal: Any, resource: Any, revoke: bool) -> bool:
    kind, owner_id = resource
    require_feed_access(session, principal, kind, owner_id, revoke=revoke)
    return True


@policy.register("feed.read", roles={
    "admin": "all", "organizer": "his subtree's", "trainer": "his own",
    "site_operator": "his site's", "site_screen": "its site's",
    "member": "his own, his site's, his unit's"})
def _feed_read(session: Session, principal: Any, resource: Any) -> bool:
    """Get a calendar feed's URL: `resource` is (kind, owner id)."""
    return _require_feed(session, principal, resource, False)


@policy.register("feed.reset", roles={
    "admin": "all", "organizer": "his subtree's", "trainer": "his own",
    "site_operator": "his site's", "member": "his own"})
def _feed_reset(session: Session, principal: Any, resource: Any) -> bool:
    """Reset a calendar feed's URL (the old one stops working)."""
    return _require_feed(session, principal, resource, True)


#: A session's targets and its occurrences decide who operates and who is expected
#: (core/authepoch.py).
authepoch.watch(StudySession, ignore={"materialized_until"})
authepoch.watch(Occurrence)
