"""Accounts: users, passwords, bearer tokens, and who may see or change what.

Scope rules, in one place:
- admin: everything.
- organizer: the org unit named on the user and its whole subtree (its sites, members,
  and the sessions aimed at them).
- trainer: the sessions he trains; reads the org tree and sites to aim them.
- site_operator: his one site (its screen, roll call, attendance).
- member: his own roster entry, attendance and calendar.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from blinker import Namespace
from sqlalchemy import Connection, Select, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from accounts.access import (  # noqa: F401  (re-exported: the scopes live in access.py)
    can_manage_org_unit,
    can_operate_site,
    can_view_member,
    can_view_site,
    creatable_roles,
    managed_org_unit_ids,
    require_manage_org_unit,
    require_manage_user,
    subtree_ids,
)
from accounts.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from accounts.models import ROLES, ApiToken, AuditEntry, User, new_session_token
from accounts.passwords import MIN_LENGTH, check_new_password
from config import Settings
from core import policy
from core.principals import SiteScreen, is_system
from core.types import utcnow
from org.models import Member, OrgUnit, Site

MIN_PASSWORD_LENGTH = MIN_LENGTH
log = logging.getLogger(__name__)

signals = Namespace()
#: A user's credentials ended (logout, password, deactivation, role, a revoked token):
#: sent with the user's id, so that what a process remembers of them goes too (HLS grants).
credentials_ended = signals.signal("credentials-ended")
#: Days a user's API token stays valid (the app's `settings().token_days` is passed).
TOKEN_DAYS = Settings().token_days
#: Days a meeting-room screen's token stays valid until renewed (`screen_token_days`): a
#: year, a party-education year, renewed from the site's page without touching the screen.
SCREEN_TOKEN_DAYS = Settings().screen_token_days


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    display_name: str = "",
    org_unit_id: int | None = None,
    site_id: int | None = None,
    member_id: int | None = None,
    check_policy: bool = True,
) -> User:
    """Create a user, checking that the role has the scope it needs (and, unless
    `check_policy` is off, that the password is not weak: see accounts.passwords)."""
    username = (username or "").strip()
    if not username or len(username) > 80:
        raise ValidationError("用户名不能为空，且不超过 80 个字符", field="username")
    if role not in ROLES:
        raise ValidationError(f"未知角色：{role}", field="role", details={"allowed": list(ROLES)})
    if check_policy:
        check_new_password(password, username)
    elif not password:
        raise ValidationError("密码不能为空", field="password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"用户名已存在：{username}", details={"field": "username"})
    required_scope = {
        "organizer": (OrgUnit, org_unit_id, "org_unit_id", "组织管理员需要指定所管理的组织"),
        "site_operator": (Site, site_id, "site_id", "学习点管理员需要指定学习点"),
        "member": (Member, member_id, "member_id", "党员账号需要关联花名册中的党员"),
    }.get(role)
    if required_scope:
        model, value, field, message = required_scope
        if value is None or session.get(model, value) is None:
            raise ValidationError(f"{message}（{field}）", field=field)
    user = User(
        username=username,
        password_hash=generate_password_hash(password),
        role=role,
        display_name=display_name or username,
        org_unit_id=org_unit_id if role == "organizer" else None,
        site_id=site_id if role == "site_operator" else None,
        member_id=member_id if role == "member" else None,
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    check_new_password(password, user.username)
    user.password_hash = generate_password_hash(password)


def update_user(
    user: User,
    *,
    display_name: str | None = None,
    active: bool | None = None,
    password: str | None = None,
    locale: str | None = None,
) -> User:
    """Change what may change on a user; role and scope stay (create a new user instead)."""
    if display_name is not None:
        if not display_name.strip() or len(display_name) > 100:
            raise ValidationError("姓名不能为空，且不超过 100 个字符", field="display_name")
        user.display_name = display_name.strip()
    if active is not None:
        if active != user.active:
            end_sessions(user)  # reactivation must not revive old cookies either
        user.active = active
        if not active:
            for token in user.tokens:
                token.revoked = True
    if password is not None:
        set_password(user, password)
        end_sessions(user)
        revoke_user_tokens(user)
    if locale is not None:
        if locale not in ("zh", "en", ""):
            raise ValidationError("界面语言只能是 zh 或 en", field="locale")
        user.locale = locale or None
    return user


_dummy_hash: list[str] = []


def _unknown_user_hash() -> str:
    """A hash to verify against when the user does not exist: the same work as for a
    real user, so the answer's time does not tell whether a username exists."""
    if not _dummy_hash:
        _dummy_hash.append(generate_password_hash(secrets.token_hex(16)))
    return _dummy_hash[0]


def authenticate(session: Session, username: str, password: str) -> User:
    """The active user with that username and password, or Unauthorized."""
    user = session.scalar(select(User).where(User.username == (username or "").strip()))
    stored = user.password_hash if user is not None else _unknown_user_hash()
    matches = check_password_hash(stored, password or "")
    if user is None or not matches or not user.active:
        raise Unauthorized("用户名或密码错误", code="invalid_credentials")
    return user


def audit(session: Session, action: str, *, actor: User | None = None, username: str = "",
          target: str = "", address: str | None = None,
          details: dict[str, Any] | None = None, now: dt.datetime | None = None) -> None:
    """Append an audit entry (flushed with the change it records; never committed here)."""
    if is_system(actor):  # a job or the CLI: no user, named "system"
        details = {**(details or {}), "actor": "system"}
    session.add(AuditEntry(at=now or utcnow(), actor_id=actor.id if actor else None,
                           action=action, username=(username or "")[:80],
                           target=target[:100], address=(address or "")[:64],
                           details=details or {}))


def end_sessions(user: User) -> None:
    """End every login session and remember cookie of `user` (a new session token)."""
    user.session_token = new_session_token()
    credentials_ended.send(user.id)


def revoke_user_tokens(user: User) -> int:
    """Revoke every API token of `user` (not site-screen tokens); returns the count."""
    count = 0
    for token in user.tokens:
        if not token.revoked:
            token.revoked = True
            count += 1
    credentials_ended.send(user.id)
    return count


def change_own_password(user: User, current_password: str | None, new_password: str) -> None:
    """A user's own password change: the current password is required, whatever the
    credential of the request (a stolen token alone must not take the account)."""
    if not current_password or not check_password_hash(user.password_hash, current_password):
        raise Forbidden("当前密码不正确", code="wrong_password",
                        details={"field": "current_password"})
    update_user(user, password=new_password)


def issue_token(session: Session, user: User, now: dt.datetime | None = None,
                days: int = TOKEN_DAYS) -> str:
    """A new API bearer token for `user`, valid `days`; only its hash is stored."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), purpose="api",
                         created_at=now, expires_at=now + dt.timedelta(days=days)))
    session.flush()
    return token


def issue_site_token(session: Session, site: Site, now: dt.datetime | None = None,
                     days: int = SCREEN_TOKEN_DAYS) -> str:
    """A bearer token for a meeting-room screen (a room may have several screens), valid
    `days` until renewed."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(site_id=site.id, token_hash=hash_token(token), purpose="site",
                         created_at=now, expires_at=now + dt.timedelta(days=days)))
    session.flush()
    return token


def site_tokens(session: Session, site_id: int) -> list[ApiToken]:
    """The screen tokens of a site that are not revoked (live or expired), oldest first."""
    return list(session.scalars(
        select(ApiToken).where(ApiToken.site_id == site_id, ApiToken.purpose == "site",
                               ApiToken.revoked.is_(False)).order_by(ApiToken.id)))


def renew_site_tokens(session: Session, site: Site, now: dt.datetime | None = None,
                      days: int = SCREEN_TOKEN_DAYS) -> int:
    """Give every unrevoked screen token of a site `days` from now (an expired one works
    again: its screen needs no new address); returns the count."""
    now = now or utcnow()
    rows = site_tokens(session, site.id)
    for row in rows:
        row.expires_at = now + dt.timedelta(days=days)
    session.flush()
    return len(rows)


def expired_token(session: Session, token: str, now: dt.datetime | None = None
                  ) -> ApiToken | None:
    """The token a bearer string names when it is only expired (not revoked): its holder
    is told to renew it rather than that it is unknown."""
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked or row.expires_at is None:
        return None
    return row if row.expires_at <= (now or utcnow()) else None


def revoke_site_tokens(session: Session, site: Site) -> int:
    """Revoke every screen token of a site (a lost or replaced screen); returns the count."""
    rows = session.scalars(
        select(ApiToken).where(ApiToken.site_id == site.id, ApiToken.purpose == "site",
                               ApiToken.revoked.is_(False))
    ).all()
    for row in rows:
        row.revoked = True
    return len(rows)


#: A token's `last_used_at` is written at most this often (one UPDATE a minute per token,
#: not one per request or socket event).
TOKEN_USE_RESOLUTION = dt.timedelta(minutes=1)
#: Key in the database session's `info` of the token ids used and due a `last_used_at`.
TOKENS_USED = "accounts.tokens_used"


def token_lookup(session: Session, token: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The live ApiToken for a bearer string, or None.

    A use is noted in `session.info` when the token's `last_used_at` is a minute old;
    the edge writes it after the request (`record_token_use`), in a transaction of its
    own, so that a GET, which commits nothing, still counts as a use.
    """
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        return None
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return None
    if row.user is not None and not row.user.active:
        return None
    now = now or dt.datetime.now(dt.UTC)
    if row.last_used_at is None or now - row.last_used_at >= TOKEN_USE_RESOLUTION:
        session.info.setdefault(TOKENS_USED, set()).add(row.id)
    return row


def principal_for_token(session: Session, token: str) -> User | SiteScreen | None:
    """The principal behind a bearer token (the loader registered with core.principals)."""
    row = token_lookup(session, token)
    if row is None:
        return None
    if row.user_id is not None:
        return row.user
    return SiteScreen(site_id=row.site_id) if row.site_id is not None else None


def record_token_use(connection: Connection, token_ids: Iterable[int], now: dt.datetime) -> int:
    """Write `last_used_at = now` for tokens last used a minute or more ago; returns the
    rows written. The condition is in the UPDATE, so several processes write once."""
    ids = sorted(set(token_ids))
    if not ids:
        return 0
    result = connection.execute(
        update(ApiToken).where(ApiToken.id.in_(ids), or_(
            ApiToken.last_used_at.is_(None),
            ApiToken.last_used_at <= now - TOKEN_USE_RESOLUTION))
        .values(last_used_at=now))
    return result.rowcount
def revoke_token(session: Session, token: str) -> bool:
    """Revoke the token given as a bearer string; False when it is not live."""
    row = token_lookup(session, token)
    if row is None:
        return False
    row.revoked = True
    credentials_ended.send(row.user_id)
    return True


def revoke_tokens_of(session: Session, actor: User, user_id: int) -> int:
    """Revoke every API token of a user: the user himself, or one who manages him."""
    user = get_user(session, user_id)
    if actor.id != user.id:
        require_manage_user(session, actor, role=user.role, org_unit_id=user.org_unit_id,
                            site_id=user.site_id, member_id=user.member_id)
    count = revoke_user_tokens(user)
    audit(session, "tokens_revoked", actor=actor, username=user.username,
          target=f"user:{user.id}", details={"count": count})
    session.flush()
    return count


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"用户不存在：{user_id}")
    return user


def ensure_admin(session: Session, username: str, password: str) -> User | None:
    """Create the admin named by the environment when no admin exists yet."""
    if session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None:
        return None
    try:
        check_new_password(password, username)
    except ValidationError as exc:
        # The operator chose it in the environment; refusing would stop the start-up.
        log.warning("YUANJIAO_ADMIN_PASSWORD is weak (%s); change it after logging in",
                    exc.raw_message)
    return create_user(session, username=username, password=password, role="admin",
                       display_name="系统管理员", check_policy=False)


# --- managing users ---------------------------------------------------------------


def create_user_for(session: Session, actor: User, **data: Any) -> User:
    """Create a user on behalf of `actor` (admin, or organizer inside his subtree)."""
    require_manage_user(session, actor, role=data.get("role", ""),
                        org_unit_id=data.get("org_unit_id"), site_id=data.get("site_id"),
                        member_id=data.get("member_id"))
    user = create_user(session, **data)
    audit(session, "user_created", actor=actor, username=user.username,
          target=f"user:{user.id}", details={"role": user.role})
    return user


def managed_user(session: Session, actor: User, user_id: int) -> User:
    """A user `actor` may deactivate or reset: 404 when missing, 403 when out of scope."""
    user = get_user(session, user_id)
    if user.id == actor.id:
        raise Forbidden("不能在这里修改自己的账号")
    require_manage_user(session, actor, role=user.role, org_unit_id=user.org_unit_id,
                        site_id=user.site_id, member_id=user.member_id)
    return user


def set_user_active(session: Session, actor: User, user_id: int, active: bool) -> User:
    """Deactivate (or reactivate) a user; a deactivated user's tokens stop working."""
    user = managed_user(session, actor, user_id)
    update_user(user, active=active)
    audit(session, "user_activated" if active else "user_deactivated", actor=actor,
          username=user.username, target=f"user:{user.id}")
    session.flush()
    return user


#: The field of a user that holds each role's scope.
SCOPE_FIELDS = {"organizer": "org_unit_id", "site_operator": "site_id", "member": "member_id"}


def change_role(session: Session, actor: User, user_id: int, *, role: str | None = None,
                org_unit_id: int | None = None, site_id: int | None = None,
                member_id: int | None = None) -> User:
    """Move a user to another role or scope (an organizer to another unit, an operator
    to another site). The actor must manage the user as he is and may hand out what he
    becomes. A change ends every session, remember cookie and API token of the user:
    what he may do changed, so must what he is logged in with."""
    user = managed_user(session, actor, user_id)
    new_role = role or user.role
    if new_role not in ROLES:
        raise ValidationError(f"未知角色：{new_role}", field="role",
                              details={"allowed": list(ROLES)})
    given = {"org_unit_id": org_unit_id, "site_id": site_id, "member_id": member_id}
    field = SCOPE_FIELDS.get(new_role)
    scope = dict.fromkeys(given)
    if field is not None:
        # The role's scope: the one given, else (same role) the one he has.
        scope[field] = given[field] if given[field] is not None else (
            getattr(user, field) if new_role == user.role else None)
        model = {"org_unit_id": OrgUnit, "site_id": Site, "member_id": Member}[field]
        if scope[field] is None or session.get(model, scope[field]) is None:
            raise ValidationError(f"该角色需要有效的 {field}", field=field)
    require_manage_user(session, actor, role=new_role, **scope)
    before = {"role": user.role, "org_unit_id": user.org_unit_id, "site_id": user.site_id,
              "member_id": user.member_id}
    after = {"role": new_role, **scope}
    if after == before:
        return user
    for name, value in after.items():
        setattr(user, name, value)
    end_sessions(user)
    revoked = revoke_user_tokens(user)
    audit(session, "user_role_changed", actor=actor, username=user.username,
          target=f"user:{user.id}", details={"from": before, "to": after,
                                             "tokens_revoked": revoked})
    session.flush()
    return user


def reset_password(session: Session, actor: User, user_id: int, password: str) -> User:
    user = managed_user(session, actor, user_id)
    update_user(user, password=password)
    audit(session, "password_reset", actor=actor, username=user.username,
          target=f"user:{user.id}")
    session.flush()
    return user


def users_query(session: Session, actor: User) -> Select:
    """Users an admin sees all of; an organizer, those scoped inside his subtree."""
    policy.require(actor, "user.manage", session=session)
    query = select(User).order_by(User.id)
    ids = managed_org_unit_ids(session, actor)
    if ids is not None:
        query = query.where(
            User.org_unit_id.in_(ids)
            | User.site_id.in_(select(Site.id).where(Site.org_unit_id.in_(ids)))
            | User.member_id.in_(select(Member.id).where(Member.org_unit_id.in_(ids)))
        )
    return query


def audit_query(session: Session, actor: User) -> Select:
    """The audit log, newest first: admins only."""
    policy.require(actor, "audit.read", session=session)
    return select(AuditEntry).order_by(AuditEntry.id.desc())
