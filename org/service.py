"""The rules of the organization: org units as a tree, sites, the member roster, imports.

Every function takes the db session and the acting principal (`actor`): a user, or
`core.principals.SYSTEM` for the CLI and demo seeding (every check grants it).
Functions validate, change, flush; they never commit, never read `request`, never emit.

Who may do what (the scope checks live in accounts.access and org.access):
- admin: everything;
- organizer: writes and reads inside his org-unit subtree;
- trainer: reads org units and sites (to aim sessions), no members, no writes;
- site_operator: reads his site, its org unit, and the members whose home site it is;
- member: reads himself (and his home site).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from accounts import service as accounts
from accounts.access import Actor
from core.timeutil import DEFAULT_TZ
from org import access, importer
from org.access import WRITER_ROLES, visible_org_unit_ids  # noqa: F401  (re-exported)
from org.errors import Conflict, Forbidden, ImportRefused, NotFound, ValidationError
from org.models import (
    MEMBER_CATEGORIES,
    MEMBER_STATUSES,
    ORG_UNIT_KINDS,
    Member,
    OrgUnit,
    Site,
)

log = logging.getLogger(__name__)

#: Marks an update argument that was not given (None is a real value: "no parent").
UNSET: Any = object()

#: Which kind of unit may sit under which. A committee may be the root or sit under a
#: higher committee; branches may hang directly off a committee where there is no
#: general branch; a group (党小组) always belongs to a branch or general branch.
ALLOWED_PARENTS: dict[str, tuple[str | None, ...]] = {
    "committee": (None, "committee"),
    "general_branch": (None, "committee"),
    "branch": (None, "committee", "general_branch"),
    "group": ("branch", "general_branch"),
}

KIND_LABELS = {"committee": "党委", "general_branch": "党总支", "branch": "党支部",
               "group": "党小组"}
CATEGORY_LABELS = {"full": "正式党员", "probationary": "预备党员", "activist": "入党积极分子",
                   "mobile": "流动党员"}
STATUS_LABELS = {"active": "在册", "transferred": "已转出"}
#: Chinese category names accepted by the import (and their common short forms).
CATEGORY_ALIASES = {
    **{label: key for key, label in CATEGORY_LABELS.items()},
    **{key: key for key in MEMBER_CATEGORIES},
    "正式": "full", "预备": "probationary", "积极分子": "activist", "流动": "mobile",
}



# --- small helpers ---------------------------------------------------------------------


def _text(value: Any, field: str, *, max_length: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{field} 必须是文本", field=field)
    value = value.strip()
    if required and not value:
        raise ValidationError(f"{field} 不能为空", field=field)
    if len(value) > max_length:
        raise ValidationError(f"{field} 不能超过 {max_length} 个字符", field=field)
    return value


def _require_writer(actor: Actor) -> None:
    access.require_writer(actor)


def _require_manage(session: Session, actor: Actor, org_unit_id: int | None) -> None:
    _require_writer(actor)
    accounts.require_manage_org_unit(session, actor, org_unit_id)


def _referenced(session: Session, model: type, field: str, value: Any):
    """The row a request body names by id, or a 422 naming that field."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} 必须是整数", field=field)
    row = session.get(model, value)
    if row is None:
        raise ValidationError(f"{field} 指向的记录不存在：{value}", field=field)
    return row


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_timezone(name: str | None) -> str:
    """An IANA zone name (Asia/Shanghai when empty), or a 422 naming `timezone`."""
    name = (name or "").strip() or DEFAULT_TZ
    if name not in _timezones():
        raise ValidationError(f"未知时区：{name}（请使用 IANA 时区名，如 Asia/Shanghai）",
                              field="timezone")
    return name


def _capacity(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("容纳人数必须是不小于 0 的整数", field="capacity")
    return value


def _category(value: Any) -> str:
    if value not in MEMBER_CATEGORIES:
        raise ValidationError(f"未知类别：{value}", field="category",
                              details={"allowed": list(MEMBER_CATEGORIES)})
    return value


def _status(value: Any) -> str:
    if value not in MEMBER_STATUSES:
        raise ValidationError(f"未知状态：{value}", field="status",
                              details={"allowed": list(MEMBER_STATUSES)})
    return value


# --- org units -------------------------------------------------------------------------


def org_units_query(session: Session, actor: Actor, *,
                    parent_id: int | None = None, kind: str | None = None) -> Select:
    """The org units `actor` may read, by id."""
    query = select(OrgUnit).order_by(OrgUnit.id)
    ids = visible_org_unit_ids(session, actor)
    if ids is not None:
        query = query.where(OrgUnit.id.in_(ids))
    if parent_id is not None:
        query = query.where(OrgUnit.parent_id == parent_id)
    if kind is not None:
        query = query.where(OrgUnit.kind == kind)
    return query


def get_org_unit(session: Session, actor: Actor, org_unit_id: int) -> OrgUnit:
    """An org unit `actor` may read: 404 when missing, 403 when out of scope."""
    unit = session.get(OrgUnit, org_unit_id)
    if unit is None:
        raise NotFound(f"组织不存在：{org_unit_id}")
    ids = visible_org_unit_ids(session, actor)
    if ids is not None and unit.id not in ids:
        raise Forbidden("无权查看该组织", details={"org_unit_id": org_unit_id})
    return unit


def _check_placement(kind: str, parent: OrgUnit | None, field: str = "parent_id") -> None:
    allowed = ALLOWED_PARENTS[kind]
    parent_kind = parent.kind if parent is not None else None
    if parent_kind not in allowed:
        where = KIND_LABELS.get(parent_kind, "顶层") if parent_kind else "顶层"
        raise ValidationError(
            f"{KIND_LABELS[kind]}不能设在{where}"
            f"{'下' if parent_kind else ''}",
            field=field,
            details={"kind": kind, "parent_kind": parent_kind,
                     "allowed_parent_kinds": [k for k in allowed if k]},
        )


def _check_kind(kind: Any) -> str:
    if kind not in ORG_UNIT_KINDS:
        raise ValidationError(f"未知组织类型：{kind}", field="kind",
                              details={"allowed": list(ORG_UNIT_KINDS)})
    return kind


def _check_sibling_name(session: Session, name: str, parent_id: int | None,
                        exclude_id: int | None = None) -> None:
    """Two units of the same name under one parent would make imports by name ambiguous."""
    query = select(OrgUnit.id).where(OrgUnit.name == name, OrgUnit.parent_id.is_(None)
                                     if parent_id is None else OrgUnit.parent_id == parent_id)
    if exclude_id is not None:
        query = query.where(OrgUnit.id != exclude_id)
    if session.scalar(query.limit(1)) is not None:
        raise Conflict(f"同一上级组织下已有同名组织：{name}", details={"field": "name"})


def create_org_unit(session: Session, actor: Actor, *, name: str, kind: str,
                    parent_id: int | None = None) -> OrgUnit:
    """Create a unit under `parent_id` (None: a root, admins only) and set its path."""
    name = _text(name, "name", max_length=200)
    kind = _check_kind(kind)
    parent = _referenced(session, OrgUnit, "parent_id", parent_id)
    _require_writer(actor)
    if parent is None and not access.may_make_top_level(actor):
        raise Forbidden("只有系统管理员可以创建顶层组织")
    if parent is not None:
        accounts.require_manage_org_unit(session, actor, parent.id)
    _check_placement(kind, parent)
    _check_sibling_name(session, name, parent.id if parent else None)
    unit = OrgUnit(name=name, kind=kind, parent_id=parent.id if parent else None, path="/")
    session.add(unit)
    session.flush()
    unit.path = f"{parent.path if parent else '/'}{unit.id}/"
    session.flush()
    log.info("org unit %s created (%s) under %s", unit.id, kind, parent_id)
    return unit


def update_org_unit(session: Session, actor: Actor, org_unit_id: int, *,
                    name: Any = UNSET, kind: Any = UNSET, parent_id: Any = UNSET) -> OrgUnit:
    """Rename, change the kind of, or move (`parent_id`) a unit."""
    unit = get_org_unit(session, actor, org_unit_id)
    _require_manage(session, actor, unit.id)
    if parent_id is not UNSET and parent_id != unit.parent_id:
        move_org_unit(session, actor, unit.id, parent_id)
    if kind is not UNSET and kind != unit.kind:
        kind = _check_kind(kind)
        _check_placement(kind, unit.parent, field="kind")
        for child in unit.children:
            if kind not in ALLOWED_PARENTS[child.kind]:
                raise ValidationError(
                    f"“{child.name}”（{KIND_LABELS[child.kind]}）不能设在"
                    f"{KIND_LABELS[kind]}下，请先调整下级组织", field="kind")
        unit.kind = kind
    if name is not UNSET:
        name = _text(name, "name", max_length=200)
        if name != unit.name:
            _check_sibling_name(session, name, unit.parent_id, exclude_id=unit.id)
            unit.name = name
    session.flush()
    return unit


def move_org_unit(session: Session, actor: Actor, org_unit_id: int,
                  new_parent_id: int | None) -> OrgUnit:
    """Hang a unit (and its whole subtree) under another parent, rewriting their paths."""
    unit = get_org_unit(session, actor, org_unit_id)
    _require_manage(session, actor, unit.id)
    parent = _referenced(session, OrgUnit, "parent_id", new_parent_id)
    if parent is None:
        if not access.may_make_top_level(actor):
            raise Forbidden("只有系统管理员可以把组织设为顶层")
    else:
        if parent.path.startswith(unit.path):
            raise ValidationError("不能把组织移到它自己或它的下级组织之下", field="parent_id",
                                  details={"parent_id": parent.id}, code="cycle")
        accounts.require_manage_org_unit(session, actor, parent.id)
    _check_placement(unit.kind, parent)
    _check_sibling_name(session, unit.name, parent.id if parent else None, exclude_id=unit.id)
    old_path = unit.path
    new_path = f"{parent.path if parent else '/'}{unit.id}/"
    subtree = session.scalars(select(OrgUnit).where(OrgUnit.path.startswith(old_path))).all()
    for row in subtree:
        row.path = new_path + row.path[len(old_path):]
    unit.parent_id = parent.id if parent else None
    unit.parent = parent
    session.flush()
    log.info("org unit %s moved: %s -> %s (%d units)", unit.id, old_path, new_path,
             len(subtree))
    return unit


#: Friendly names of tables that may still point at an org unit.
_REFERENCE_LABELS = {"users": "用户", "session_org_units": "学习安排"}


def delete_org_unit(session: Session, actor: Actor, org_unit_id: int) -> None:
    """Delete an empty unit; refuse one that still has children, sites, members or users."""
    unit = get_org_unit(session, actor, org_unit_id)
    _require_manage(session, actor, unit.id)
    if access.heads_unit(actor, unit.id):
        raise Forbidden("不能删除自己负责的组织")
    counts = {
        "children": session.scalar(select(func.count()).where(OrgUnit.parent_id == unit.id)),
        "sites": session.scalar(select(func.count()).where(Site.org_unit_id == unit.id)),
        "members": session.scalar(select(func.count()).where(Member.org_unit_id == unit.id)),
    }
    parts = []
    if counts["children"]:
        parts.append(f"{counts['children']} 个下级组织")
    if counts["sites"]:
        parts.append(f"{counts['sites']} 个学习点")
    if counts["members"]:
        parts.append(f"{counts['members']} 名党员")
    # Other domains (users, sessions aimed at the unit) reference org units too; find them
    # from the metadata so a new reference elsewhere cannot turn this into a 500.
    for table in OrgUnit.metadata.sorted_tables:
        if table.name in ("org_units", "sites", "members"):
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == "org_units":
                n = session.scalar(select(func.count()).select_from(table)
                                   .where(fk.parent == unit.id))
                if n:
                    counts[table.name] = n
                    parts.append(f"{n} 条{_REFERENCE_LABELS.get(table.name, table.name)}")
    if parts:
        raise Conflict(f"“{unit.name}”还有" + "、".join(parts) + "，不能删除",
                       details={k: v for k, v in counts.items() if v}, code="not_empty")
    session.delete(unit)
    session.flush()
    log.info("org unit %s deleted", org_unit_id)


def org_tree(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """The units `actor` may read as nested dicts `{unit, depth, children}`, by name."""
    units = list(session.scalars(org_units_query(session, actor)))
    by_parent: dict[int | None, list[OrgUnit]] = {}
    ids = {u.id for u in units}
    for unit in units:
        # A unit whose parent is out of view is a root of the visible forest.
        key = unit.parent_id if unit.parent_id in ids else None
        by_parent.setdefault(key, []).append(unit)

    def build(parent_id: int | None, depth: int) -> list[dict[str, Any]]:
        return [{"unit": u, "depth": depth, "children": build(u.id, depth + 1)}
                for u in sorted(by_parent.get(parent_id, []), key=lambda u: (u.name, u.id))]

    return build(None, 0)


def flatten_tree(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tree in display order, each node with its depth."""
    out: list[dict[str, Any]] = []
    for node in tree:
        out.append(node)
        out.extend(flatten_tree(node["children"]))
    return out


# --- sites -----------------------------------------------------------------------------


def sites_query(session: Session, actor: Actor, *, org_unit_id: int | None = None,
                active: bool | None = None) -> Select:
    """The sites `actor` may read; `org_unit_id` includes the unit's subtree."""
    query = select(Site).order_by(Site.id)
    clause = access.site_filter(session, actor)
    if clause is not None:
        query = query.where(clause)
    if org_unit_id is not None:
        query = query.where(Site.org_unit_id.in_(accounts.subtree_ids(session, org_unit_id)))
    if active is not None:
        query = query.where(Site.active.is_(active))
    return query


def get_site(session: Session, actor: Actor, site_id: int) -> Site:
    """A site `actor` may read: 404 when missing, 403 when out of scope."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"学习点不存在：{site_id}", details={"site_id": site_id})
    if not accounts.can_view_site(session, actor, site):
        raise Forbidden("无权查看该学习点", details={"site_id": site_id})
    return site


def checkin_networks_value(value: Any) -> str:
    """A site's QR check-in networks, validated and normalised: CIDRs, one per line."""
    import ipaddress

    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 1000:
        raise ValidationError("签到网段须为文本，且不超过 1000 个字符", field="checkin_networks")
    out = []
    for part in value.replace(",", "\n").replace("，", "\n").split("\n"):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError as exc:
            raise ValidationError(f"签到网段无效：{part}（例：10.20.0.0/16）",
                                  field="checkin_networks") from exc
    return "\n".join(dict.fromkeys(out))


def create_site(session: Session, actor: Actor, *, name: str, org_unit_id: int,
                timezone: str | None = DEFAULT_TZ, location: str | None = "",
                capacity: int | None = None, checkin_networks: Any = "",
                checkin_code_required: Any = False) -> Site:
    """Create a meeting room for an org unit the actor manages."""
    name = _text(name, "name", max_length=200)
    unit = _referenced(session, OrgUnit, "org_unit_id", org_unit_id)
    if unit is None:
        raise ValidationError("org_unit_id 不能为空", field="org_unit_id")
    _require_manage(session, actor, unit.id)
    if not isinstance(checkin_code_required, bool):
        raise ValidationError("checkin_code_required 必须是布尔值", field="checkin_code_required")
    site = Site(name=name, org_unit_id=unit.id, timezone=validate_timezone(timezone),
                location=_text(location, "location", max_length=300, required=False),
                capacity=_capacity(capacity), active=True,
                checkin_networks=checkin_networks_value(checkin_networks),
                checkin_code_required=checkin_code_required)
    session.add(site)
    session.flush()
    log.info("site %s created for org unit %s", site.id, unit.id)
    return site


def update_site(session: Session, actor: Actor, site_id: int, *, name: Any = UNSET,
                org_unit_id: Any = UNSET, timezone: Any = UNSET, location: Any = UNSET,
                capacity: Any = UNSET, active: Any = UNSET, checkin_networks: Any = UNSET,
                checkin_code_required: Any = UNSET) -> Site:
    """Change a site; moving it to another org unit needs the right on both units."""
    site = get_site(session, actor, site_id)
    _require_manage(session, actor, site.org_unit_id)
    if org_unit_id is not UNSET and org_unit_id != site.org_unit_id:
        unit = _referenced(session, OrgUnit, "org_unit_id", org_unit_id)
        if unit is None:
            raise ValidationError("org_unit_id 不能为空", field="org_unit_id")
        _require_manage(session, actor, unit.id)
        site.org_unit_id = unit.id
    if name is not UNSET:
        site.name = _text(name, "name", max_length=200)
    if timezone is not UNSET:
        site.timezone = validate_timezone(timezone)
    if location is not UNSET:
        site.location = _text(location, "location", max_length=300, required=False)
    if capacity is not UNSET:
        site.capacity = _capacity(capacity)
    if active is not UNSET:
        if not isinstance(active, bool):
            raise ValidationError("active 必须是布尔值", field="active")
        site.active = active
    if checkin_networks is not UNSET:
        site.checkin_networks = checkin_networks_value(checkin_networks)
    if checkin_code_required is not UNSET:
        if not isinstance(checkin_code_required, bool):
            raise ValidationError("checkin_code_required 必须是布尔值",
                                  field="checkin_code_required")
        site.checkin_code_required = checkin_code_required
    session.flush()
    return site


def deactivate_site(session: Session, actor: Actor, site_id: int) -> Site:
    """Retire a meeting room: kept for history, its screen tokens revoked."""
    site = update_site(session, actor, site_id, active=False)
    accounts.revoke_site_tokens(session, site)
    session.flush()
    return site


def issue_screen_token(session: Session, actor: Actor, site_id: int,
                       days: int = accounts.SCREEN_TOKEN_DAYS) -> tuple[Site, str]:
    """A new bearer token for a meeting-room screen of the site, valid `days`."""
    site = get_site(session, actor, site_id)
    if not accounts.can_operate_site(session, actor, site):
        raise Forbidden("无权为该学习点签发屏幕令牌", details={"site_id": site_id})
    if not site.active:
        raise Conflict("学习点已停用，不能签发屏幕令牌", details={"site_id": site_id})
    token = accounts.issue_site_token(session, site, days=days)
    log.info("screen token issued for site %s", site.id)
    return site, token


def renew_screen_tokens(session: Session, actor: Actor, site_id: int,
                        days: int = accounts.SCREEN_TOKEN_DAYS) -> int:
    """Every unrevoked screen token of the site valid `days` from now (expired ones too:
    the screens keep their address); returns the count."""
    site = get_site(session, actor, site_id)
    if not accounts.can_operate_site(session, actor, site):
        raise Forbidden("无权为该学习点续期屏幕令牌", details={"site_id": site_id})
    if not site.active:
        raise Conflict("学习点已停用，不能续期屏幕令牌", details={"site_id": site_id})
    count = accounts.renew_site_tokens(session, site, days=days)
    log.info("%d screen tokens renewed for site %s", count, site.id)
    return count


def revoke_screen_tokens(session: Session, actor: Actor, site_id: int) -> int:
    """Revoke every screen token of the site; returns how many were live."""
    site = get_site(session, actor, site_id)
    if not accounts.can_operate_site(session, actor, site):
        raise Forbidden("无权吊销该学习点的屏幕令牌", details={"site_id": site_id})
    count = accounts.revoke_site_tokens(session, site)
    session.flush()
    log.info("%d screen tokens revoked for site %s", count, site.id)
    return count


# --- members ---------------------------------------------------------------------------


def members_query(session: Session, actor: Actor, *, org_unit_id: int | None = None,
                  site_id: int | None = None, category: str | None = None,
                  status: str | None = None, q: str | None = None) -> Select:
    """Members `actor` may read, filtered; `org_unit_id` includes the unit's subtree."""
    query = select(Member).order_by(Member.id)
    clause = access.member_filter(session, actor)
    if clause is not None:
        query = query.where(clause)
    if org_unit_id is not None:
        query = query.where(Member.org_unit_id.in_(accounts.subtree_ids(session, org_unit_id)))
    if site_id is not None:
        query = query.where(Member.home_site_id == site_id)
    if category is not None:
        query = query.where(Member.category == _category(category))
    if status is not None:
        query = query.where(Member.status == _status(status))
    if q:
        needle = q.strip().lower()
        query = query.where(or_(
            func.lower(Member.name).contains(needle, autoescape=True),
            func.lower(Member.member_no).contains(needle, autoescape=True),
            Member.phone.contains(needle, autoescape=True),
        ))
    return query


def organization_units(session: Session, site: Site):
    """A SELECT of the unit ids of the site's organization: the tree its top unit heads.
    A room's walk-ins come from there (and only from there: see
    attendance.service.require_check_in_scope)."""
    unit = session.get(OrgUnit, site.org_unit_id)
    root = "/" + unit.path.strip("/").split("/")[0] + "/" if unit and unit.path.strip("/") \
        else "/"
    return select(OrgUnit.id).where(OrgUnit.path.startswith(root, autoescape=True))


def walk_in_candidates(session: Session, site: Site, q: str, *, limit: int = 20
                       ) -> list[Member]:
    """Active members of the site's organization (the tree its top unit heads) whose name,
    number or phone contains `q`: the people a room's operator may mark as walk-ins."""
    needle = (q or "").strip().lower()
    if not needle:
        return []
    units = organization_units(session, site)
    return list(session.scalars(
        select(Member).where(
            Member.status == "active", Member.org_unit_id.in_(units),
            or_(func.lower(Member.name).contains(needle, autoescape=True),
                func.lower(Member.member_no).contains(needle, autoescape=True),
                Member.phone.contains(needle, autoescape=True)))
        .order_by(Member.name, Member.id).limit(limit)))


def get_member(session: Session, actor: Actor, member_id: int) -> Member:
    """A member `actor` may read: 404 when missing, 403 when out of scope."""
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound(f"党员不存在：{member_id}", details={"member_id": member_id})
    if not accounts.can_view_member(session, actor, member):
        raise Forbidden("无权查看该党员", details={"member_id": member_id})
    return member


def _home_site(session: Session, actor: Actor, site_id: Any) -> Site | None:
    site = _referenced(session, Site, "home_site_id", site_id)
    if site is None:
        return None
    if not site.active:
        raise ValidationError(f"学习点已停用：{site.name}", field="home_site_id")
    if not accounts.can_view_site(session, actor, site):
        raise Forbidden("无权使用该学习点", details={"home_site_id": site.id})
    return site


def _check_member_no(session: Session, member_no: str, exclude_id: int | None = None) -> None:
    query = select(Member.id).where(Member.member_no == member_no)
    if exclude_id is not None:
        query = query.where(Member.id != exclude_id)
    if session.scalar(query.limit(1)) is not None:
        raise Conflict(f"党员编号已存在：{member_no}", details={"field": "member_no"})


def create_member(session: Session, actor: Actor, *, name: str, member_no: str,
                  org_unit_id: int, home_site_id: int | None = None, category: str = "full",
                  phone: str | None = "") -> Member:
    """Add a member to the roster of an org unit the actor manages."""
    name = _text(name, "name", max_length=100)
    member_no = _text(member_no, "member_no", max_length=50)
    unit = _referenced(session, OrgUnit, "org_unit_id", org_unit_id)
    if unit is None:
        raise ValidationError("org_unit_id 不能为空", field="org_unit_id")
    _require_manage(session, actor, unit.id)
    site = _home_site(session, actor, home_site_id)
    _check_member_no(session, member_no)
    member = Member(name=name, member_no=member_no, org_unit_id=unit.id,
                    home_site_id=site.id if site else None, category=_category(category),
                    phone=_text(phone, "phone", max_length=30, required=False),
                    status="active")
    session.add(member)
    session.flush()
    return member


def update_member(session: Session, actor: Actor, member_id: int, *, name: Any = UNSET,
                  member_no: Any = UNSET, org_unit_id: Any = UNSET, home_site_id: Any = UNSET,
                  category: Any = UNSET, phone: Any = UNSET, status: Any = UNSET) -> Member:
    """Change a member; `status="transferred"` records a transfer out (转出)."""
    member = get_member(session, actor, member_id)
    _require_manage(session, actor, member.org_unit_id)
    if org_unit_id is not UNSET and org_unit_id != member.org_unit_id:
        unit = _referenced(session, OrgUnit, "org_unit_id", org_unit_id)
        if unit is None:
            raise ValidationError("org_unit_id 不能为空", field="org_unit_id")
        _require_manage(session, actor, unit.id)
        member.org_unit_id = unit.id
    if home_site_id is not UNSET and home_site_id != member.home_site_id:
        site = _home_site(session, actor, home_site_id)
        member.home_site_id = site.id if site else None
    if member_no is not UNSET:
        member_no = _text(member_no, "member_no", max_length=50)
        if member_no != member.member_no:
            _check_member_no(session, member_no, exclude_id=member.id)
            member.member_no = member_no
    if name is not UNSET:
        member.name = _text(name, "name", max_length=100)
    if category is not UNSET:
        member.category = _category(category)
    if phone is not UNSET:
        member.phone = _text(phone, "phone", max_length=30, required=False)
    if status is not UNSET:
        member.status = _status(status)
    session.flush()
    return member


def transfer_member(session: Session, actor: Actor, member_id: int) -> Member:
    """Transfer a member out: kept with his history, no longer expected at sessions."""
    return update_member(session, actor, member_id, status="transferred")


# --- member import ---------------------------------------------------------------------

_IMPORT_FIELDS = ("name", "org_unit_id", "home_site_id", "category", "phone")


class _Resolver:
    """Finds org units and sites by name (or id) once per import, within the actor's scope."""

    def __init__(self, session: Session, actor: Actor) -> None:
        self.managed = accounts.managed_org_unit_ids(session, actor)
        self.actor = actor
        self.units = list(session.execute(select(OrgUnit.id, OrgUnit.name)))
        self.sites = list(session.execute(select(Site.id, Site.name, Site.org_unit_id,
                                                 Site.active)))
        self._indexes: dict[int, tuple[dict[str, list], dict[int, Any]]] = {}

    def _pick(self, rows: list, text: str, noun: str, scope_ok) -> tuple[Any, str | None]:
        by_name, by_id = self._index(rows)
        matches = by_name.get(text, [])
        if not matches and text.isdigit() and int(text) in by_id:
            matches = [by_id[int(text)]]
        if not matches:
            return None, f"{noun}不存在：{text}"
        in_scope = [r for r in matches if scope_ok(r)]
        if not in_scope:
            return None, f"{noun}“{text}”不在您的管理范围内"
        if len(in_scope) > 1:
            ids = "、".join(str(r.id) for r in in_scope)
            return None, f"{noun}名称“{text}”对应多个（编号 {ids}），请改填编号"
        return in_scope[0], None

    def _index(self, rows: list) -> tuple[dict[str, list], dict[int, Any]]:
        """Name and id lookups, built once per list (a file may have 50,000 rows)."""
        key = id(rows)
        if key not in self._indexes:
            by_name: dict[str, list] = {}
            for row in rows:
                by_name.setdefault(row.name, []).append(row)
            self._indexes[key] = (by_name, {row.id: row for row in rows})
        return self._indexes[key]

    def unit(self, text: str) -> tuple[Any, str | None]:
        return self._pick(self.units, text, "所在支部",
                          lambda r: self.managed is None or r.id in self.managed)

    def site(self, text: str) -> tuple[Any, str | None]:
        row, problem = self._pick(
            self.sites, text, "学习点",
            lambda r: self.managed is None or r.org_unit_id in self.managed)
        if row is not None and not row.active:
            return None, f"学习点已停用：{text}"
        return row, problem


def import_members(session: Session, filename: str, content: bytes, *, dry_run: bool,
                   actor: Any) -> dict[str, Any]:
    """Create or update members from an xlsx/csv file, all rows or none.

    Existing member numbers are updated (only the columns the file has, and only
    non-empty cells). A file with any bad row raises ImportRefused whose
    `details["rows"]` lists `{"row", "message"}` for each; nothing is written. A dry run
    returns the same report and writes nothing.
    """
    _require_writer(actor)
    table = importer.read_member_table(filename, content)
    resolver = _Resolver(session, actor)
    numbers = [rec["member_no"] for _n, rec in table.rows if rec.get("member_no")]
    existing: dict[str, Member] = {}
    for start in range(0, len(numbers), 500):
        chunk = numbers[start:start + 500]
        for found in session.scalars(select(Member).where(Member.member_no.in_(chunk))):
            existing[found.member_no] = found

    errors: list[dict[str, Any]] = []
    plans: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    for number, rec in table.rows:
        problems: list[str] = []
        name = rec.get("name", "")
        member_no = rec.get("member_no", "")
        if not name:
            problems.append("姓名为空")
        elif len(name) > 100:
            problems.append("姓名超过 100 个字符")
        if not member_no:
            problems.append("党员编号为空")
        elif len(member_no) > 50:
            problems.append("党员编号超过 50 个字符")
        elif member_no in first_row:
            problems.append(f"党员编号 {member_no} 与第 {first_row[member_no]} 行重复")
        else:
            first_row[member_no] = number
        values: dict[str, Any] = {"name": name}
        if rec.get("org_unit"):
            unit, problem = resolver.unit(rec["org_unit"])
            if problem:
                problems.append(problem)
            else:
                values["org_unit_id"] = unit.id
        else:
            problems.append("所在支部为空")
        if rec.get("site"):
            site, problem = resolver.site(rec["site"])
            if problem:
                problems.append(problem)
            else:
                values["home_site_id"] = site.id
        if rec.get("category"):
            category = CATEGORY_ALIASES.get(rec["category"].strip().lower())
            if category is None:
                problems.append(f"类别无法识别：{rec['category']}（可填 正式党员、预备党员、"
                                "入党积极分子、流动党员）")
            else:
                values["category"] = category
        if rec.get("phone"):
            if len(rec["phone"]) > 30:
                problems.append("手机号超过 30 个字符")
            values["phone"] = rec["phone"]
        member = existing.get(member_no)
        if member is not None and resolver.managed is not None \
                and member.org_unit_id not in resolver.managed:
            problems.append(f"党员编号 {member_no} 已属于您管理范围之外的组织")
        if problems:
            errors.append({"row": number, "member_no": member_no or None,
                           "message": "；".join(problems), "problems": problems})
            continue
        if member is None:
            values.setdefault("category", "full")
            plans.append({"row": number, "member_no": member_no, "name": name,
                          "action": "create", "values": values, "changes": {}})
            continue
        changes = {field: {"old": getattr(member, field), "new": values[field]}
                   for field in _IMPORT_FIELDS
                   if field in values and values[field] != getattr(member, field)}
        plans.append({"row": number, "member_no": member_no, "name": name,
                      "action": "update" if changes else "unchanged", "member": member,
                      "member_id": member.id, "values": values, "changes": changes})

    if errors:
        raise ImportRefused(
            f"文件中有 {len(errors)} 行有误，整个文件未导入。请修改后重新上传。",
            details={"filename": filename, "rows": errors, "error_rows": len(errors),
                     "total": len(table.rows)})

    if not dry_run:
        for plan in plans:
            if plan["action"] == "create":
                plan["member"] = Member(member_no=plan["member_no"], status="active",
                                        **plan["values"])
                session.add(plan["member"])
            elif plan["action"] == "update":
                for field, change in plan["changes"].items():
                    setattr(plan["member"], field, change["new"])
        session.flush()
        for plan in plans:
            if plan["action"] == "create":
                plan["member_id"] = plan["member"].id

    counts = {action: sum(1 for p in plans if p["action"] == action)
              for action in ("create", "update", "unchanged")}
    log.info("member import %s%s: %s", filename, " (dry run)" if dry_run else "", counts)
    return {
        "filename": filename,
        "format": table.format,
        "dry_run": dry_run,
        "total": len(plans),
        "created": counts["create"],
        "updated": counts["update"],
        "unchanged": counts["unchanged"],
        "ignored_columns": table.ignored_columns,
        "rows": [{"row": p["row"], "member_no": p["member_no"], "name": p["name"],
                  "action": p["action"], "member_id": p.get("member_id"),
                  "changes": p["changes"]} for p in plans],
    }


def labels(values: Iterable[str], table: dict[str, str]) -> list[tuple[str, str]]:
    """(value, Chinese label) pairs for a select box."""
    return [(v, table.get(v, v)) for v in values]
