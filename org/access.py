"""Who may read and change the organization: the actions of org in `core.policy`, and the
filters that narrow lists to what a caller may read (on the scopes of accounts.access).

- admin: everything;
- organizer: writes and reads inside his org-unit subtree;
- trainer: reads org units and sites (to aim sessions), no members, no writes;
- site_operator: reads his site, its org unit, and the members whose home site it is;
- member: reads himself (and his home site).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from accounts.access import (
    can_manage_org_unit,
    can_operate_site,
    can_view_member,
    can_view_site,
    has_role,
    is_admin,
    managed_org_unit_ids,
)
from core import authepoch, policy
from core.principals import is_system
from org.errors import Forbidden
from org.models import Member, OrgUnit, Site

#: Roles that may change org units, sites and members (each inside his scope).
WRITER_ROLES = ("admin", "organizer")


def is_writer(actor: Any) -> bool:
    return is_system(actor) or has_role(actor, *WRITER_ROLES)


def require_writer(actor: Any) -> None:
    if not is_writer(actor):
        raise Forbidden("当前角色无权修改组织数据", details={"role": getattr(actor, "role", None)})


def visible_org_unit_ids(session: Session, actor: Any) -> list[int] | None:
    """Org units `actor` may read: None means all; members read none (403)."""
    if is_system(actor) or has_role(actor, "admin", "trainer"):
        return None
    if has_role(actor, "organizer"):
        return managed_org_unit_ids(session, actor) or []
    if has_role(actor, "site_operator"):
        site = session.get(Site, actor.site_id) if actor.site_id else None
        return [site.org_unit_id] if site else []
    raise Forbidden("当前角色无权查看组织", details={"role": getattr(actor, "role", None)})


def site_filter(session: Session, actor: Any) -> Any | None:
    """A WHERE clause on Site for the sites `actor` may read (None: all)."""
    if is_system(actor) or has_role(actor, "admin", "trainer"):
        return None
    if has_role(actor, "organizer"):
        return Site.org_unit_id.in_(managed_org_unit_ids(session, actor) or [])
    if has_role(actor, "site_operator"):
        return Site.id == actor.site_id
    if has_role(actor, "member"):
        return Site.id == (actor.member.home_site_id if actor.member else None)
    raise Forbidden("当前角色无权查看学习点")


def member_filter(session: Session, actor: Any) -> Any | None:
    """A WHERE clause on Member for the members `actor` may read (None: all)."""
    if is_system(actor) or is_admin(actor):
        return None
    if has_role(actor, "organizer"):
        return Member.org_unit_id.in_(managed_org_unit_ids(session, actor) or [])
    if has_role(actor, "site_operator"):
        return Member.home_site_id == actor.site_id
    if has_role(actor, "member"):
        return Member.id == actor.member_id
    raise Forbidden("当前角色无权查看党员名册", details={"role": getattr(actor, "role", None)})


def may_make_top_level(actor: Any) -> bool:
    """Only an admin creates a root unit or moves one to the top."""
    return is_system(actor) or is_admin(actor)


def heads_unit(actor: Any, org_unit_id: int) -> bool:
    """The organizer responsible for this very unit (he may not delete or move it)."""
    return has_role(actor, "organizer") and actor.org_unit_id == org_unit_id


# --- the actions of org (docs/authorization.md) ------------------------------------------


@policy.register("org.read", roles={"admin": "all", "organizer": "his subtree",
                                    "trainer": "units, sites", "site_operator": "his site's unit"},
                 refuse="当前角色无权查看组织")
def _org_read(session: Session, principal: Any, org_unit_id: Any) -> bool:
    """Read the tree (no resource) or one unit (its id)."""
    try:
        ids = visible_org_unit_ids(session, principal)
    except Forbidden:
        return False
    return ids is None or org_unit_id is None or org_unit_id in ids


@policy.register("org.write", roles={"admin": "all", "organizer": "his subtree"},
                 refuse="当前角色无权修改组织数据")
def _org_write(session: Session, principal: Any, org_unit_id: Any) -> bool:
    """Change units, sites and members: the pages (no resource) or in one unit (its id)."""
    if not is_writer(principal):
        return False
    return org_unit_id is None or can_manage_org_unit(session, principal, org_unit_id)


@policy.register("org.top_level", roles={"admin": "all"},
                 refuse="只有系统管理员可以创建顶层组织")
def _org_top_level(_session: Session, principal: Any, _resource: Any) -> bool:
    """Create a root unit, or move a unit to the top."""
    return may_make_top_level(principal)


def _has_scope(scope_filter: Any, session: Session, principal: Any) -> bool:
    """The principal may read some of the list: its scope filter does not refuse him."""
    try:
        scope_filter(session, principal)
    except Forbidden:
        return False
    return True


@policy.register("site.read", roles={"admin": "all", "organizer": "his subtree",
                                     "trainer": "all", "site_operator": "his site",
                                     "member": "his home site"},
                 refuse="无权查看该学习点")
def _site_read(session: Session, principal: Any, site: Any) -> bool:
    """Read the list of sites (no resource) or one site."""
    if site is None:
        return _has_scope(site_filter, session, principal)
    return can_view_site(session, principal, site)


@policy.register("site.operate", roles={"admin": "all", "organizer": "his subtree's sites",
                                        "site_operator": "his site"},
                 refuse="无权操作该学习点")
def _site_operate(session: Session, principal: Any, site: Any) -> bool:
    """Run a meeting room: its screen tokens, roll call, check-ins."""
    if site is None:
        return has_role(principal, "admin", "organizer", "site_operator")
    return can_operate_site(session, principal, site)


@policy.register("member.read", roles={"admin": "all", "organizer": "his subtree",
                                       "site_operator": "his site's", "member": "himself"},
                 refuse="当前角色无权查看党员名册")
def _member_read(session: Session, principal: Any, member: Any) -> bool:
    """Read the roster (no resource) or one member."""
    if member is None:
        return _has_scope(member_filter, session, principal)
    return can_view_member(session, principal, member)


@policy.register("org.tree", roles={"admin": "all", "organizer": "his subtree",
                                    "trainer": "all (to aim sessions)"},
                 refuse="当前角色无权访问此页面")
def _org_tree(_session: Session, principal: Any, _resource: Any) -> bool:
    """The org tree page."""
    return has_role(principal, "admin", "organizer", "trainer")


@policy.register("site.pages", roles={"admin": "all", "organizer": "his subtree",
                                      "trainer": "all", "site_operator": "his site"},
                 refuse="当前角色无权访问此页面")
def _site_pages(_session: Session, principal: Any, _resource: Any) -> bool:
    """The sites pages (list, one site)."""
    return has_role(principal, "admin", "organizer", "trainer", "site_operator")


@policy.register("member.pages", roles={"admin": "all", "organizer": "his subtree",
                                        "site_operator": "his site's members"},
                 refuse="当前角色无权访问此页面")
def _member_pages(_session: Session, principal: Any, _resource: Any) -> bool:
    """The roster pages (list, one member)."""
    return has_role(principal, "admin", "organizer", "site_operator")


#: Who operates a site, which members are expected where: the org tree, sites and the
#: roster (core/authepoch.py).
authepoch.watch(OrgUnit)
authepoch.watch(Site)
authepoch.watch(Member)
