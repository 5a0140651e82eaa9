"""Scopes of the roles, and the actions of accounts in the one policy (`core.policy`).

- admin: everything.
- organizer: the org unit named on the user and its whole subtree (its sites, members,
  and the sessions aimed at them).
- trainer: the sessions he trains; reads the org tree and sites to aim them.
- site_operator: his one site (its screen, roll call, attendance).
- member: his own roster entry, attendance and calendar.

`accounts.service` re-exports every public name.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.errors import Forbidden
from accounts.models import ROLES, ApiToken, User
from core import authepoch, policy
from core.principals import SiteScreen, SystemPrincipal, is_system
from org.models import Member, OrgUnit, Site

#: Who acts in a service that changes data: a user, or the system (jobs, CLI, seeding).
Actor: TypeAlias = User | SystemPrincipal


def is_screen(principal: Any) -> bool:
    return isinstance(principal, SiteScreen)


def has_role(principal: Any, *roles: str) -> bool:
    """The principal is a user (not a screen, not the system) of one of `roles`."""
    return (principal is not None and not is_screen(principal) and not is_system(principal)
            and getattr(principal, "role", None) in roles)


def is_admin(principal: Any) -> bool:
    return has_role(principal, "admin")


# --- scope -----------------------------------------------------------------------------


def subtree_ids(session: Session, org_unit_id: int) -> list[int]:
    """Ids of an org unit and every unit below it."""
    unit = session.get(OrgUnit, org_unit_id)
    if unit is None:
        return []
    return list(session.scalars(select(OrgUnit.id).where(OrgUnit.path.startswith(unit.path))))


def managed_org_unit_ids(session: Session, user: Any) -> list[int] | None:
    """Org units a user may manage: None means all (admin, the system), [] means none."""
    if is_admin(user) or is_system(user):
        return None
    if has_role(user, "organizer") and user.org_unit_id is not None:
        return subtree_ids(session, user.org_unit_id)
    return []


def can_manage_org_unit(session: Session, user: Any, org_unit_id: int | None) -> bool:
    if is_admin(user) or is_system(user):
        return True
    if org_unit_id is None:
        return False
    ids = managed_org_unit_ids(session, user)
    return ids is None or org_unit_id in ids


def require_manage_org_unit(session: Session, user: Any, org_unit_id: int | None) -> None:
    if not can_manage_org_unit(session, user, org_unit_id):
        raise Forbidden("无权管理该组织", details={"org_unit_id": org_unit_id})


def can_view_site(session: Session, user: Any, site: Site) -> bool:
    if has_role(user, "admin", "trainer") or is_system(user):
        return True
    if has_role(user, "organizer"):
        return can_manage_org_unit(session, user, site.org_unit_id)
    if has_role(user, "site_operator"):
        return user.site_id == site.id
    if has_role(user, "member"):
        return user.member is not None and user.member.home_site_id == site.id
    return False


def can_operate_site(session: Session, user: Any, site: Site) -> bool:
    """Run the meeting room: roll call, screen token, check-ins."""
    if is_admin(user) or is_system(user):
        return True
    if has_role(user, "organizer"):
        return can_manage_org_unit(session, user, site.org_unit_id)
    return has_role(user, "site_operator") and user.site_id == site.id


def can_view_member(session: Session, user: Any, member: Member) -> bool:
    if is_admin(user) or is_system(user):
        return True
    if has_role(user, "organizer"):
        return can_manage_org_unit(session, user, member.org_unit_id)
    if has_role(user, "site_operator"):
        return member.home_site_id == user.site_id
    if has_role(user, "member"):
        return user.member_id == member.id
    return False


# --- managing users ---------------------------------------------------------------


def creatable_roles(actor: Any) -> tuple[str, ...]:
    """Roles `actor` may hand out: all for an admin, site operator and member for organizers."""
    if is_admin(actor) or is_system(actor):
        return ROLES
    if has_role(actor, "organizer"):
        return ("site_operator", "member")
    return ()


def _user_scope_unit(session: Session, role: str, org_unit_id: int | None,
                     site_id: int | None, member_id: int | None) -> int | None:
    """The org unit a user of `role` with that scope belongs to (the target's, not the
    caller's: an organizer's unit, an operator's site's unit, a member's unit)."""
    if role == "organizer":
        return org_unit_id
    if role == "site_operator" and site_id is not None:
        site = session.get(Site, site_id)
        return site.org_unit_id if site else None
    if role == "member" and member_id is not None:
        member = session.get(Member, member_id)
        return member.org_unit_id if member else None
    return None


def require_manage_user(session: Session, actor: Any, *, role: str,
                        org_unit_id: int | None = None, site_id: int | None = None,
                        member_id: int | None = None) -> None:
    """Refuse unless `actor` may create or change a user of that role and scope."""
    if role not in creatable_roles(actor):
        raise Forbidden("只有系统管理员可以创建或管理该角色的用户", details={"role": role})
    if is_admin(actor) or is_system(actor):
        return
    unit_id = _user_scope_unit(session, role, org_unit_id, site_id, member_id)
    require_manage_org_unit(session, actor, unit_id)


# --- the actions of accounts (docs/authorization.md) ----------------------------------------


@policy.register("user.manage", roles={"admin": "all", "organizer": "site operators and "
                                       "members of his subtree"},
                 refuse="当前角色无权管理用户")
def _user_manage(session: Session, principal: Any, user: Any) -> bool:
    """The users list (no resource), or one user (a User): create, (de)activate, reset,
    revoke tokens, lift a throttle."""
    if user is None:
        return bool(creatable_roles(principal))
    if getattr(user, "id", None) == principal.id:
        return False
    try:
        require_manage_user(session, principal, role=user.role, org_unit_id=user.org_unit_id,
                            site_id=user.site_id, member_id=user.member_id)
    except Forbidden:
        return False
    return True


@policy.register("user.read", roles={"admin": "all", "organizer": "site operators and members "
                                     "of his subtree", "trainer": "himself",
                                     "site_operator": "himself", "member": "himself"},
                 refuse="无权查看该用户")
def _user_read(session: Session, principal: Any, user: Any) -> bool:
    """Read a user's account: one's own, or one he manages (no resource: one's own)."""
    if user is None or getattr(user, "id", None) == principal.id:
        return not is_screen(principal)
    return _user_manage(session, principal, user)


@policy.register("audit.read", roles={"admin": "all"},
                 refuse="只有系统管理员可以查看审计日志")
def _audit_read(_session: Session, principal: Any, _resource: Any) -> bool:
    return is_admin(principal)


@policy.register("user.grant_role", roles={"admin": "every role",
                                           "organizer": "site operator, member"},
                 refuse="只有系统管理员可以创建或管理该角色的用户")
def _user_grant_role(_session: Session, principal: Any, role: Any) -> bool:
    """Hand out `role` (a role name) to a user one creates or changes."""
    return role in creatable_roles(principal)


#: Rights cached on long connections rest on users and tokens (core/authepoch.py); a
#: token's last use and a user's language decide nothing.
authepoch.watch(User, ignore={"locale"})
authepoch.watch(ApiToken, ignore={"last_used_at"})
