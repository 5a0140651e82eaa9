"""Calendar feeds: signed per-owner URLs, their ETag and body, and one session's .ics."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections import OrderedDict
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from accounts.models import User
from core.principals import SiteScreen
from core.timeutil import DEFAULT_TZ
from org.models import Member, OrgUnit, Site
from sessions.access import TRAINER_ROLES
from sessions.errors import Forbidden, NotFound, ValidationError
from sessions.models import (
    CalendarFeed,
    Occurrence,
    StudySession,
)
from sessions.targets import (
    sessions_for_member,
    sessions_for_org_unit,
    sessions_targeting_site,
)


def feed_sessions_filter(session: Session, kind: str, owner_id: int) -> Any:
    """A WHERE clause on StudySession for a feed owner (site, member, trainer, org unit)."""
    if kind == "site":
        return sessions_targeting_site(session, owner_id)
    if kind == "trainer":
        return StudySession.trainer_id == owner_id
    if kind == "member":
        member = session.get(Member, owner_id)
        if member is None:
            return StudySession.id.is_(None)
        return sessions_for_member(member)
    if kind == "org_unit":
        unit = session.get(OrgUnit, owner_id)
        if unit is None:
            return StudySession.id.is_(None)
        return sessions_for_org_unit(unit)
    raise ValidationError(f"未知的订阅类型：{kind}", field="kind")


# --- calendar feeds ----------------------------------------------------------------------------

FEED_KINDS = ("site", "member", "trainer", "org_unit")
_FEED_SALT = "yuanjiao-calendar-feed"
#: Rendered feeds by ETag. The ETag is derived from the data, so an entry can never be
#: stale: any change gives a new key. Bounded, since every change leaves an orphan.
_feed_cache: OrderedDict[str, bytes] = OrderedDict()
_FEED_CACHE_SIZE = 128
#: Bump when the feed's format changes, so that clients and the cache start afresh.
_FEED_FORMAT = "4"


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
    from accounts.service import can_manage_org_unit, can_operate_site

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


def _feed_row(session: Session, kind: str, owner_id: int) -> CalendarFeed:
    row = session.scalar(select(CalendarFeed).where(CalendarFeed.owner_kind == kind,
                                                    CalendarFeed.owner_id == owner_id))
    if row is None:
        row = CalendarFeed(owner_kind=kind, owner_id=owner_id, nonce=secrets.token_urlsafe(16))
        session.add(row)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # created concurrently by another request
            row = session.scalars(select(CalendarFeed).where(
                CalendarFeed.owner_kind == kind, CalendarFeed.owner_id == owner_id)).one()
    return row


def feed_token(session: Session, kind: str, owner_id: int, *, secret: str) -> str:
    """The signed token of a feed: {kind, id, nonce}; stable until revoked."""
    _feed_owner(session, kind, owner_id)
    row = _feed_row(session, kind, owner_id)
    return URLSafeSerializer(secret, salt=_FEED_SALT).dumps([kind, owner_id, row.nonce])


def revoke_feed(session: Session, kind: str, owner_id: int, *, secret: str) -> str:
    """A new nonce: every older URL of this feed stops working. Returns the new token."""
    _feed_owner(session, kind, owner_id)
    row = _feed_row(session, kind, owner_id)
    row.nonce = secrets.token_urlsafe(16)
    session.flush()
    return URLSafeSerializer(secret, salt=_FEED_SALT).dumps([kind, owner_id, row.nonce])


def resolve_feed(session: Session, token: str, *, secret: str) -> CalendarFeed:
    """The feed a token stands for, or NotFound (forged, malformed or revoked)."""
    try:
        kind, owner_id, nonce = URLSafeSerializer(secret, salt=_FEED_SALT).loads(token)
    except (BadSignature, ValueError, TypeError) as exc:
        raise NotFound("订阅地址无效") from exc
    row = session.scalar(select(CalendarFeed).where(CalendarFeed.owner_kind == kind,
                                                    CalendarFeed.owner_id == owner_id))
    if row is None or not secrets.compare_digest(row.nonce, str(nonce)):
        raise NotFound("订阅地址已失效（已被重置）", code="feed_revoked")
    return row


def feed_etag(session: Session, feed: CalendarFeed) -> str:
    """A cheap validator of a feed: counts and latest changes of its sessions and rows."""
    return feed_validators(session, feed)[0]


def feed_validators(session: Session, feed: CalendarFeed
                    ) -> tuple[str, dt.datetime | None]:
    """The feed's ETag, and its Last-Modified: the latest change of its sessions and
    occurrences (None for an empty feed)."""
    clause = feed_sessions_filter(session, feed.owner_kind, feed.owner_id)
    s_count, s_max = session.execute(
        select(func.count(StudySession.id), func.max(StudySession.updated_at)).where(clause)
    ).one()
    o_count, o_max = session.execute(
        select(func.count(Occurrence.id), func.max(Occurrence.updated_at))
        .join(StudySession).where(clause)
    ).one()
    raw = f"{_FEED_FORMAT}|{feed.owner_kind}|{feed.owner_id}|{s_count}|{s_max}|{o_count}|{o_max}"
    changes = [x if x.tzinfo else x.replace(tzinfo=dt.UTC)
               for x in (s_max, o_max, feed.changed_at) if isinstance(x, dt.datetime)]
    return hashlib.sha256(raw.encode()).hexdigest()[:32], max(changes, default=None)


def feed_name(session: Session, kind: str, owner_id: int) -> str:
    owner = _feed_owner(session, kind, owner_id)
    label = {"site": "学习点", "member": "党员", "trainer": "讲师", "org_unit": "组织"}[kind]
    name = owner.display_name if kind == "trainer" else owner.name
    return f"远教 · {label} · {name}"


def _feed_timezone(session: Session, kind: str, owner_id: int) -> str:
    owner = _feed_owner(session, kind, owner_id)
    if kind == "site":
        return owner.timezone
    if kind == "member" and owner.home_site is not None:
        return owner.home_site.timezone
    return DEFAULT_TZ


def feed_body(session: Session, feed: CalendarFeed, etag: str) -> bytes:
    """The feed's iCalendar text, rendered once per ETag."""
    body = _feed_cache.get(etag)
    if body is not None:
        _feed_cache.move_to_end(etag)
        return body
    from sessions import ical

    studies = session.scalars(
        select(StudySession).where(feed_sessions_filter(session, feed.owner_kind, feed.owner_id))
        .options(selectinload(StudySession.occurrences), selectinload(StudySession.sites))
        .order_by(StudySession.id)
    ).all()
    cal = ical.build_calendar(list(studies),
                              name=feed_name(session, feed.owner_kind, feed.owner_id),
                              timezone=_feed_timezone(session, feed.owner_kind, feed.owner_id))
    body = ical.to_bytes(cal)
    _feed_cache[etag] = body
    while len(_feed_cache) > _FEED_CACHE_SIZE:
        _feed_cache.popitem(last=False)
    return body


def session_ics(study: StudySession) -> bytes:
    """One session as an .ics file (download or e-mail attachment)."""
    from sessions import ical

    cal = ical.build_calendar([study], name=study.title, timezone=study.timezone)
    return ical.to_bytes(cal)
