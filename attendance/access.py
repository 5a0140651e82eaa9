"""Who may: manage, view or operate an occurrence's attendance; scopes of joint occurrences.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.access import has_role
from attendance.errors import (
    Forbidden,
    NotFound,
)
from attendance.lookups import expected_member_ids
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from attendance.records import Row
from core import policy
from core.principals import SYSTEM, is_system
from org import service as org_service
from org.models import Member, Site
from sessions.models import Occurrence
from sessions.targets import occurrence_site_ids, occurrence_unit_ids  # the targeting rule

log = logging.getLogger(__name__)


def is_screen(principal: Any) -> bool:
    return getattr(principal, "role", None) == "site_screen"


def can_manage_occurrence(session: Session, user: Any, occurrence: Occurrence) -> bool:
    """Admins, and organizers whose scope covers a unit or site the occurrence targets."""
    if is_screen(user):
        return False
    if is_system(user) or user.role == "admin":
        return True
    if user.role != "organizer":
        return False
    from accounts.service import managed_org_unit_ids

    managed = set(managed_org_unit_ids(session, user) or [])
    return bool(managed & occurrence_unit_ids(occurrence))


def require_manage_occurrence(session: Session, user: Any, occurrence: Occurrence) -> None:
    if not can_manage_occurrence(session, user, occurrence):
        raise Forbidden("无权管理该学习活动的考勤", details={"occurrence_id": occurrence.id})


def can_view_occurrence(session: Session, user: Any, occurrence: Occurrence) -> bool:
    """Managers, the session's trainer, and operators of a targeted site."""
    if can_manage_occurrence(session, user, occurrence):
        return True
    if is_screen(user):
        return user.site_id in occurrence_site_ids(session, occurrence)
    if user.role == "trainer":
        return occurrence.session.trainer_id == user.id
    if user.role == "site_operator":
        return user.site_id in occurrence_site_ids(session, occurrence)
    return False


def require_view_occurrence(session: Session, user: Any, occurrence: Occurrence) -> None:
    if not can_view_occurrence(session, user, occurrence):
        raise Forbidden("无权查看该学习活动的考勤", details={"occurrence_id": occurrence.id})


def require_site_of_occurrence(session: Session, occurrence: Occurrence, site: Site) -> None:
    if site.id not in occurrence_site_ids(session, occurrence):
        raise Forbidden("该学习点不在本次学习活动范围内",
                        details={"occurrence_id": occurrence.id, "site_id": site.id})


def require_operate_site(session: Session, principal: Any, occurrence: Occurrence,
                         site: Site) -> None:
    """Roll call at a site: admin, an organizer in scope, its operator, or its own screen."""
    require_site_of_occurrence(session, occurrence, site)
    if is_screen(principal):
        if principal.site_id != site.id:
            raise Forbidden("学习点屏幕只能操作本学习点", details={"site_id": site.id})
        return
    from accounts.service import can_operate_site

    if can_operate_site(session, principal, site) or (
            can_manage_occurrence(session, principal, occurrence)
            and member_scope(session, principal, occurrence) is None):
        return  # not an organizer of one part of a joint occurrence at another's site
    raise Forbidden("无权操作该学习点的考勤", details={"site_id": site.id})


def member_scope(session: Session, principal: Any, occurrence: Occurrence
                 ) -> Callable[[Member | None, int | None], bool] | None:
    """Whose names `principal` may see, correct and export in an occurrence: a predicate
    on (member, site id of his row), or None for everyone.

    Admins and the session's trainer see the whole roster. In a joint occurrence an
    organizer sees the members of his own subtree only; a site's operator or screen, the
    members of that site (by home site or by the site they checked in at). The others
    appear only in counts.
    """
    if is_system(principal) or (not is_screen(principal) and (principal.role == "admin" or (
            principal.role == "trainer" and occurrence.session.trainer_id == principal.id))):
        return None
    if is_screen(principal) or principal.role == "site_operator":
        site_id = principal.site_id
        return lambda m, row_site: m is not None and (
            m.home_site_id == site_id or row_site == site_id)
    if principal.role == "organizer":
        from accounts.service import managed_org_unit_ids

        managed = set(managed_org_unit_ids(session, principal) or [])
        if occurrence_unit_ids(occurrence) <= managed and all(
                u in managed for u in _member_unit_ids(session, occurrence)):
            return None  # his subtree holds the whole occurrence
        return lambda m, _row_site: m is not None and m.org_unit_id in managed
    return lambda _m, _row_site: False


def _member_unit_ids(session: Session, occurrence: Occurrence) -> set[int]:
    ids = expected_member_ids(session, occurrence)
    if not ids:
        return set()
    return set(session.scalars(select(Member.org_unit_id).where(Member.id.in_(ids))
                               .distinct()))


def visible_rows(session: Session, principal: Any, occurrence: Occurrence,
                 all_rows: list[Row]) -> list[Row]:
    """The rows `principal` may see by name (see member_scope)."""
    visible = member_scope(session, principal, occurrence)
    if visible is None:
        return all_rows
    return [r for r in all_rows if visible(r.member, r.site.id if r.site else None)]


def require_member_in_scope(session: Session, principal: Any, occurrence: Occurrence,
                            member_id: int) -> None:
    """Correct or decide for a member only within one's scope (403 otherwise)."""
    visible = member_scope(session, principal, occurrence)
    if visible is None:
        return
    member = session.get(Member, member_id)
    if member is None or not visible(member, None):
        raise Forbidden("该党员不在您管理的范围内", details={"member_id": member_id})


def require_manage_whole_occurrence(session: Session, user: Any,
                                    occurrence: Occurrence) -> None:
    """Locking reviews everyone's attendance: an admin, or an organizer whose subtree holds
    the whole occurrence (not one of several organizations of a joint one)."""
    require_manage_occurrence(session, user, occurrence)
    if member_scope(session, user, occurrence) is not None:
        raise Forbidden("联合学习活动涉及其他组织，只有系统管理员或上级组织可以锁定",
                        details={"occurrence_id": occurrence.id})


def require_check_in_scope(session: Session, principal: Any, occurrence: Occurrence,
                           site: Site, member_ids: Iterable[int],
                           expected: Iterable[int] | None = None) -> None:
    """A site's operator or screen checks in the members expected for the occurrence, and
    walk-ins of the site's own organization (the tree its top unit heads: the same people
    the roll call's walk-in search finds, org.service.walk_in_candidates). Another
    organization's member is refused exactly as an unknown id is, so that trying ids
    reveals no name. Managers of the occurrence are not limited here.

    `expected` may be passed in when the caller caches it (the socket connection does).
    """
    if not is_screen(principal) and can_manage_occurrence(session, principal, occurrence):
        return
    expected_ids = set(expected if expected is not None
                       else expected_member_ids(session, occurrence))
    others = sorted({m for m in member_ids if m not in expected_ids})
    if not others:
        return
    own = set(session.scalars(select(Member.id).where(
        Member.id.in_(others), Member.org_unit_id.in_(org_service.organization_units(
            session, site)))))
    for member_id in others:
        if member_id not in own:
            raise NotFound(f"党员不存在：{member_id}", details={"member_id": member_id})


def member_of(principal: Any) -> Member:
    """The roster entry of a member user; others cannot act as a member."""
    if is_screen(principal) or getattr(principal, "role", None) != "member" \
            or principal.member is None:
        raise Forbidden("只有党员本人可以执行此操作")
    return principal.member


def api_source(principal: Any) -> str:
    """The idempotency source of an API caller (see the module docstring)."""
    if is_screen(principal):
        return f"api:site:{principal.site_id}"
    return f"api:user:{principal.id}"


def report_scope(session: Session, principal: Any) -> tuple[list[int] | None, int | None]:
    """The org units whose attendance `principal` may report on (None: all) and, for a
    site's operator, his site (the report then names only its members)."""
    from accounts.service import managed_org_unit_ids

    if has_role(principal, "site_operator"):
        site = org_service.get_site(session, SYSTEM, principal.site_id)
        return [site.org_unit_id], site.id
    if not has_role(principal, "admin", "organizer"):
        raise Forbidden("当前角色无权查看考勤报表")
    return managed_org_unit_ids(session, principal), None


def operated_site_id(principal: Any) -> int | None:
    """The site a site operator runs (None for every other principal)."""
    return principal.site_id if has_role(principal, "site_operator") else None


# --- the actions of attendance (docs/authorization.md) --------------------------------------


def _raises(check: Callable[..., None]) -> Callable[[Session, Any, Any], bool]:
    """A rule from one of the require_* functions above (their error is the refusal)."""
    def rule(session: Session, principal: Any, resource: Any) -> bool:
        args = resource if isinstance(resource, tuple) else (resource,)
        check(session, principal, *args)
        return True
    rule.__doc__ = check.__doc__
    return rule


policy.register("attendance.view", roles={
    "admin": "all", "organizer": "in scope", "trainer": "his lectures",
    "site_operator": "targeted site", "site_screen": "targeted site"},
)(_raises(require_view_occurrence))
policy.register("attendance.manage", roles={"admin": "all", "organizer": "in scope"},
                )(_raises(require_manage_occurrence))
policy.register("attendance.lock", roles={
    "admin": "all", "organizer": "when his subtree holds all of it"},
)(_raises(require_manage_whole_occurrence))
policy.register("roll_call.mark", roles={
    "admin": "all", "organizer": "his subtree's sites", "site_operator": "his site",
    "site_screen": "its site"},
)(_raises(require_operate_site))


def _require_correct(session: Session, principal: Any, occurrence: Occurrence,
                     member_id: int) -> None:
    """Correct a member's attendance, decide his leave: managers, within their scope."""
    require_manage_occurrence(session, principal, occurrence)
    require_member_in_scope(session, principal, occurrence, member_id)


policy.register("attendance.correct", roles={"admin": "all",
                                             "organizer": "his subtree's members"},
                )(_raises(_require_correct))


@policy.register("attendance.unlock", roles={"admin": "all"}, refuse="只有系统管理员可以解锁")
def _unlock(_session: Session, principal: Any, _resource: Any) -> bool:
    return has_role(principal, "admin")


@policy.register("attendance.reports", roles={"admin": "all", "organizer": "his subtree",
                                              "site_operator": "his site's members"},
                 refuse="当前角色无权查看考勤报表")
def _reports(_session: Session, principal: Any, _resource: Any) -> bool:
    return has_role(principal, "admin", "organizer", "site_operator")


@policy.register("attendance.ledger", roles={"admin": "all", "organizer": "his subtree"},
                 refuse="当前角色无权查看学时台账")
def _ledger(_session: Session, principal: Any, _resource: Any) -> bool:
    """The ledger of study hours, and an occurrence's attendance dashboard (links)."""
    return has_role(principal, "admin", "organizer")


@policy.register("attendance.headcount", roles={
    "admin": "all", "organizer": "in scope", "trainer": "his lectures",
    "site_operator": "his site"}, refuse="当前角色无权查看人数")
def _headcount(_session: Session, principal: Any, _resource: Any) -> bool:
    """A lesson's live headcount on 工作台 (no names)."""
    return has_role(principal, "admin", "organizer", "site_operator", "trainer")


@policy.register("makeup.study", roles={"member": "himself"},
                 refuse="只有党员本人可以执行此操作")
def _makeup(_session: Session, principal: Any, _resource: Any) -> bool:
    """Act as a member: make-up study, his own leave and QR check-in."""
    return has_role(principal, "member") and principal.member is not None
