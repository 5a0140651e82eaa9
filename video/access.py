"""Who may publish, watch, see and end live connections: the actions of video in
`core.policy` (docs/authorization.md). `video.service` re-exports every public name."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from accounts.access import can_manage_org_unit, can_operate_site, has_role, is_admin
from accounts.models import User
from core import policy
from core.principals import SiteScreen
from org.models import Site
from sessions.models import Occurrence
from sessions.targets import is_expected, occurrence_unit_ids, site_is_targeted
from video.errors import Forbidden


def can_broadcast(user: User, occurrence: Occurrence) -> bool:
    """The session's trainer, or an admin."""
    return is_admin(user) or (
        occurrence.session.trainer_id is not None and occurrence.session.trainer_id == user.id
    )


def require_broadcast(user: User, occurrence: Occurrence) -> None:
    if not can_broadcast(user, occurrence):
        raise Forbidden("只有本场主讲人或管理员可以直播", details={"occurrence_id": occurrence.id})


def can_watch(session: Session, principal: User | SiteScreen, occurrence: Occurrence) -> bool:
    """Site screens and operators of targeted sites, expected members, organizers in
    scope, the session's trainer, admins."""
    if isinstance(principal, SiteScreen):
        site = session.get(Site, principal.site_id)
        return site is not None and site.active and site_is_targeted(session, occurrence, site)
    user = principal
    if is_admin(user) or can_broadcast(user, occurrence):
        return True
    if has_role(user, "organizer"):
        return any(can_manage_org_unit(session, user, uid)
                   for uid in sorted(occurrence_unit_ids(occurrence)))
    if has_role(user, "site_operator"):
        site = session.get(Site, user.site_id) if user.site_id else None
        return site is not None and site_is_targeted(session, occurrence, site)
    if has_role(user, "member"):
        return user.member_id is not None and is_expected(session, occurrence, user.member_id)
    return False


def require_watch(session: Session, principal: User | SiteScreen,
                  occurrence: Occurrence) -> None:
    if not can_watch(session, principal, occurrence):
        raise Forbidden("无权观看该场直播", details={"occurrence_id": occurrence.id})


def can_manage_live(session: Session, principal: User | SiteScreen,
                    occurrence: Occurrence) -> bool:
    """Those who manage a broadcast's connections: its trainer, admins, and organizers
    whose subtree the occurrence is aimed at. Site screens never."""
    if isinstance(principal, SiteScreen):
        return False
    if is_admin(principal) or can_broadcast(principal, occurrence):
        return True
    if not has_role(principal, "organizer"):
        return False
    study = occurrence.session
    unit_ids = [u.id for u in study.org_units] + [s.org_unit_id for s in study.sites]
    return any(can_manage_org_unit(session, principal, uid) for uid in unit_ids)


def resource_owner(principal: User | SiteScreen) -> str:
    """The owner bound to a WHEP resource when it is created: a user, or a site's screen."""
    if isinstance(principal, SiteScreen):
        return f"site:{principal.site_id}"
    return f"user:{principal.id}"


def may_end_resource(session: Session, principal: User | SiteScreen, occurrence: Occurrence,
                     resource: dict[str, Any] | None) -> bool:
    """Whether `principal` may end a WHIP/WHEP resource (as the engine describes it).

    The resource must belong to this occurrence. A viewer ends only the connection he
    created; the publisher's connection only its publisher; those who manage the
    occurrence end any. Checked before anything is stopped.
    """
    if resource is None or resource.get("occurrence_id") != occurrence.id:
        return False
    if can_manage_live(session, principal, occurrence):
        return True
    info = resource.get("info") or {}
    if resource.get("kind") == "publisher":
        return not isinstance(principal, SiteScreen) and info.get("user_id") == principal.id
    return info.get("owner") is not None and info.get("owner") == resource_owner(principal)


def can_view_site_screen(session: Session, user: User, site: Site) -> bool:
    """A meeting room's screen page, opened with a login (not a screen token)."""
    return is_admin(user) or can_operate_site(session, user, site)




# --- the actions of video (docs/authorization.md) ------------------------------------------


@policy.register("live.publish", roles={"admin": "all", "trainer": "his lectures"},
                 refuse=lambda _p, occ: Forbidden("只有本场主讲人或管理员可以直播",
                                                  details={"occurrence_id": occ.id}))
def _live_publish(_session: Session, principal: Any, occurrence: Any) -> bool:
    """Publish (WHIP) an occurrence's lecture, get its stream key."""
    return not isinstance(principal, SiteScreen) and can_broadcast(principal, occurrence)


@policy.register("live.watch", roles={"admin": "all", "organizer": "in scope",
                                      "trainer": "his lectures", "site_operator": "targeted site",
                                      "site_screen": "targeted site", "member": "expected member"},
                 refuse=lambda _p, occ: Forbidden("无权观看该场直播",
                                                  details={"occurrence_id": occ.id}))
def _live_watch(session: Session, principal: Any, occurrence: Any) -> bool:
    """Watch (WHEP) an occurrence, read its live state."""
    return can_watch(session, principal, occurrence)


@policy.register("live.manage", roles={"admin": "all", "organizer": "in scope",
                                       "trainer": "his lectures"},
                 refuse=lambda _p, occ: Forbidden("无权管理该场直播的连接",
                                                  details={"occurrence_id": occ.id}))
def _live_manage(session: Session, principal: Any, occurrence: Any) -> bool:
    """See a broadcast's viewers by name and its resource ids; end any of its connections."""
    return can_manage_live(session, principal, occurrence)


@policy.register("live.end_connection",
                 roles={"admin": "all", "organizer": "in scope", "trainer": "his lectures",
                        "site_operator": "the one he opened", "site_screen": "its site's",
                        "member": "the one he opened"},
                 refuse=lambda _p, _r: Forbidden("无权结束该连接"))
def _live_end_connection(session: Session, principal: Any, resource: Any) -> bool:
    """End a WHIP/WHEP resource: `resource` is (occurrence, the engine's description)."""
    occurrence, described = resource
    return may_end_resource(session, principal, occurrence, described)


@policy.register("site.screen", roles={"admin": "all", "organizer": "his subtree's sites",
                                       "site_operator": "his site", "site_screen": "its site"},
                 refuse=lambda _p, site: Forbidden("无权打开该学习点屏幕",
                                                   details={"site_id": getattr(site, "id", None)}))
def _site_screen(session: Session, principal: Any, site: Any) -> bool:
    """Open a meeting room's screen page: its own screen (by its token), or a login."""
    if isinstance(principal, SiteScreen):
        return principal.site_id == site.id
    return can_view_site_screen(session, principal, site)
