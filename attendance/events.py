"""Socket.IO handlers of the ``/attendance`` namespace (see docs/socket-protocol.md).

Each handler parses, authorizes, calls the service, commits and only then acks and
emits, so an acknowledged event is on disk. Refusals are raised DomainErrors, which the
default handler (core/sockets.py) turns into ``{"ok": false, "error", "message"}``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import segno
from flask import Flask, current_app, g, url_for
from flask_socketio import ConnectionRefusedError, join_room

from accounts.models import User
from attendance import live, presence, watching
from attendance import service as svc
from attendance.errors import Conflict, DomainError, Forbidden, Unauthorized
from attendance.writer import Append, Request, idle_callers_session, writer_for
from config import settings
from core import authepoch, policy
from core.api import SiteScreen
from core.principals import principal_for_token
from core.sockets import object_payload, on_hot, payload_id, socket_principal, socket_sid
from core.types import utcnow
from extensions import db, socketio

log = logging.getLogger(__name__)
NS = live.NAMESPACE

_lock = threading.Lock()


def _site_count() -> presence.LocalSiteCounts | presence.RedisSiteCounts:
    """This app's site counts (`presence.site_counts`)."""
    return presence.site_counts(current_app)


def _auth_ttl() -> float:
    return float(settings().attendance_auth_ttl)


def _holds(checked: float, at_epoch: Any) -> bool:
    """Whether what was checked at `checked` (monotonic) and `at_epoch` still holds."""
    age = time.monotonic() - checked
    now_epoch = authepoch.epoch().current()
    if at_epoch is None or now_epoch is None:
        return age < _auth_ttl()
    return at_epoch == now_epoch and age < settings().attendance_grant_max_age


def _grant(key: tuple, value: Any = True, at_epoch: Any = None) -> None:
    _conn().granted[key] = (time.monotonic(), at_epoch, value)


def _cached(cache: dict, key: Any, lock: Any, compute: Callable[[], Any]) -> Any:
    """`cache[key]` while it holds (`_holds`: until what it rests on changes,
    core/authepoch.py, or YUANJIAO_ATTENDANCE_GRANT_MAX_AGE passes; only for
    YUANJIAO_ATTENDANCE_AUTH_TTL while the epoch cannot be known, Redis away), else
    `compute()`'s, kept with when and at which epoch it was computed.

    One computation at a time per `lock`: when a cached value expires, the events already
    in flight (a greenlet each under gevent) wait for the one computation instead of each
    taking a pooled connection for the same queries."""
    hit = cache.get(key)
    if hit is not None and _holds(hit[0], hit[1]):
        return hit[2]
    with lock:
        hit = cache.get(key)
        if hit is not None and _holds(hit[0], hit[1]):
            return hit[2]
        at_epoch = authepoch.epoch().current()  # before computing: a move during it
        value = compute()                       # makes the next event compute again
        db.session.rollback()
        cache[key] = (time.monotonic(), at_epoch, value)
        return value


def _granted_or_check(key: tuple, check: Callable[[], Any]) -> Any:
    """The right `key` this connection passed (`check()`'s value), while it holds."""
    conn = _conn()
    return _cached(conn.granted, key, conn.check_lock, check)


def init_app(app: Flask) -> None:
    """Register the handlers on this app's Socket.IO server.

    Registration happens per app, not with decorators at import: a decorator binds to the
    server that exists when the module is first imported, so a second app (every test
    builds one) would have none.
    """
    watching.init_app(app)
    live.init_app(app)
    for name, handler in HANDLERS.items():
        if name not in ("connect", "disconnect", "ping"):
            handler = object_payload(handler)  # no payload or not an object: refused
        if name not in ("connect", "disconnect"):
            handler = _in_turn(handler)
        if name in HOT:
            on_hot(app, name, handler, NS)
        else:
            socketio.on_event(name, handler, namespace=NS)


class _Turns:
    """A connection's events, handled concurrently, reach the writer in arrival order.

    Under gevent every event runs in its own greenlet (async_handlers), so that a screen
    sending a roll call a second does not wait for each commit before the next mark is
    even read. The greenlets start in arrival order and take a ticket before anything can
    block them; an event hands the turn on once its appends are queued (or once it ends
    without any), and the next may queue only then. Acks may overtake each other; stored
    order never does. In threading mode events run one after another and this is moot.
    """

    __slots__ = ("done", "issued", "lock", "passed", "waiting")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued = 0
        self.passed = 0
        self.done: set[int] = set()
        #: ticket -> the event its one waiter sleeps on. Only the next ticket is woken when
        #: the turn moves on: with a Condition's notify_all every waiter of the connection
        #: woke at each hand-on, and a screen with a backlog of n events cost n² wake-ups
        #: (py-spy: 10 % of a web process once acks lagged seconds behind).
        self.waiting: dict[int, threading.Event] = {}

    def take(self) -> int:
        with self.lock:
            self.issued += 1
            return self.issued

    def wait(self, ticket: int) -> None:
        with self.lock:
            if self.passed >= ticket - 1:
                return
            turn = self.waiting[ticket] = threading.Event()
        turn.wait()

    def hand_on(self, ticket: int) -> None:
        with self.lock:
            if ticket <= self.passed:
                return
            self.done.add(ticket)
            while self.passed + 1 in self.done:
                self.passed += 1
                self.done.discard(self.passed)
            turn = self.waiting.pop(self.passed + 1, None)
        if turn is not None:
            turn.set()


@dataclass(eq=False)
class _Conn:
    """What one connection of the namespace keeps between its events (made at connect,
    dropped at disconnect). ORM rows do not outlive an event: the caller is kept as
    ("user", user_id) or ("screen", site_id)."""

    kind: str
    ident: int
    #: A screen's bearer token, looked up again when it joins a site (one that expired or
    #: was revoked since the connection opened is refused).
    token: str | None = None
    turns: _Turns = field(default_factory=_Turns)
    check_lock: threading.Lock = field(default_factory=threading.Lock)
    #: {what: (checked at, epoch, value)}: authorizations this connection passed, the
    #: member it acts as and the occurrences he may watch. Hot events (roll call,
    #: heartbeats) then need no database read at all; a revoked right or a deactivated
    #: user is noticed once the epoch moves (core/authepoch.py: within half a second
    #: across processes), or within YUANJIAO_ATTENDANCE_AUTH_TTL while Redis is away (the
    #: rules that must hold at once, the lock and the two-site rule, are checked by the
    #: writer).
    granted: dict[tuple, tuple[float, Any, Any]] = field(default_factory=dict)
    #: (occurrence_id, site_id) rooms a screen or operator joined (counted in _site_count()).
    sites: set[tuple[int, int]] = field(default_factory=set)


_conns: dict[str, _Conn] = {}


def _conn() -> _Conn:
    """This event's connection; an unknown one has no caller and keeps nothing."""
    return _conns.get(socket_sid()) or _Conn("", 0)


def _in_turn(handler):
    @functools.wraps(handler)
    def run(*args: Any):
        conn = _conns.get(socket_sid())
        if conn is None:
            return handler(*args)
        turns = conn.turns
        ticket = turns.take()
        g.attendance_turn = (turns, ticket)
        try:
            return handler(*args)
        finally:
            turns.hand_on(ticket)
    return run


def _append(req: Request) -> list:
    """Queue appends in this connection's turn, hand the turn on, wait for the commit.

    The event's read transaction ends first: neither the turn nor the commit is waited
    for holding a pooled connection (`idle_callers_session`)."""
    idle_callers_session()
    turn = g.get("attendance_turn")
    if turn is not None:
        turn[0].wait(turn[1])
    return writer_for().append(req, on_queued=None if turn is None
                               else lambda: turn[0].hand_on(turn[1]))


def _caller():
    """The connection's principal, reloaded in this event's database session."""
    conn = _conn()
    if conn.kind == "screen":
        if conn.token is None or principal_for_token(db.session, conn.token) is None:
            raise Unauthorized("屏幕令牌已过期或已吊销", code="invalid_token")
        return SiteScreen(site_id=conn.ident)
    user = db.session.get(User, conn.ident) if conn.kind == "user" else None
    if user is None or not user.active:
        raise Unauthorized("需要登录或令牌", code="login_required")
    return user


def _int(data: Any, key: str) -> int:
    return payload_id(data, key)


def _occurrence_and_site(data: Any):
    occurrence = svc.get_occurrence(db.session, _int(data, "occurrence_id"))
    return occurrence, svc.get_site(db.session, _int(data, "site_id"))


def connect(auth: Any = None):
    """Anyone with a token (site screen or API) or the login cookie; refused otherwise."""
    try:
        principal = socket_principal(auth)
    except DomainError as exc:
        raise ConnectionRefusedError(exc.to_dict()) from exc
    _conns[socket_sid()] = (_Conn("screen", principal.site_id, token=str(auth["token"]))
                           if isinstance(principal, SiteScreen) else _Conn("user", principal.id))
    db.session.rollback()  # end the read transaction: connections are long, sessions not


def disconnect(*_args: Any) -> None:
    """A screen leaving is logged as offline (the rules give it a grace period)."""
    conn = _conns.pop(socket_sid(), None)
    if conn is None:
        return
    counts = _site_count()
    gone = []
    for key in conn.sites:
        try:
            if counts.remove(key) <= 0:
                gone.append(key)
        except Exception:
            log.exception("could not count site %s's connection out", key[1])
    for occurrence_id, site_id in gone:
        try:
            if _site_presence(occurrence_id, site_id, online=False):
                live.publish_site_status(occurrence_id, site_id, False)
        except Exception:
            log.exception("could not log site %s offline", site_id)


def _site_presence(occurrence_id: int, site_id: int, *, online: bool) -> bool:
    """Log a screen online/offline through the writer; False when locked or cancelled."""
    import uuid

    try:
        _append(Request([Append(
            occurrence_id=occurrence_id, type="site_online" if online else "site_offline",
            source="server", event_id=uuid.uuid4().hex, site_id=site_id)], now=utcnow()))
    except Conflict:  # locked or cancelled: nothing to log
        return False
    return True


def ping(data: Any = None) -> dict[str, Any]:
    """A no-op round trip: the baseline that bench/attendance.py compares check-ins with."""
    return {"ok": True, "echo": data}


def site_join(data: Any) -> dict[str, Any]:
    """A site screen or operator opens the room page: the site is online; join its rooms."""
    at_epoch = authepoch.epoch().current()
    occurrence, site = _occurrence_and_site(data)
    policy.require(_caller(), "roll_call.mark", (occurrence, site))
    key = occurrence_id, site_id = occurrence.id, site.id
    _grant(("operate", *key), True, at_epoch)
    online = _site_presence(occurrence_id, site_id, online=True)
    join_room(live.site_room(occurrence_id, site_id))
    conn = _conn()
    with _lock:
        first = key not in conn.sites
        conn.sites.add(key)
    if first:
        _site_count().add(key)
    if online:
        live.publish_site_status(occurrence_id, site_id, True)

    def snapshot() -> dict[str, Any]:
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        snap = svc.snapshot(db.session, occurrence, config=settings(), now=utcnow())
        db.session.rollback()
        return snap

    # Shared with the screens joining at the same moment (a lecture's start).
    snap = live.shared_snapshots().get(occurrence_id, snapshot)
    # The roll call's scope check reads the whole expected list once per process: now,
    # while the rooms open, not in the first marks' way (with 10,000 members that read
    # held up the first second of a burst of check-ins).
    _expected_ids(occurrence_id)
    mine = next((s for s in snap["sites"] if s["site_id"] == site_id), None)
    return {"ok": True, "occurrence_id": occurrence_id, "site": mine,
            "locked": snap["locked"]}


def _require_operate(data: Any) -> tuple[int, int]:
    """(occurrence_id, site_id) the caller may operate: checked once per TTL, then cached."""
    occurrence_id, site_id = _int(data, "occurrence_id"), _int(data, "site_id")

    def check() -> bool:
        occurrence, site = _occurrence_and_site(data)
        policy.require(_caller(), "roll_call.mark", (occurrence, site))
        return True

    _granted_or_check(("operate", occurrence_id, site_id), check)
    return occurrence_id, site_id


_expected_lock = threading.Lock()


def _expected_ids(occurrence_id: int) -> frozenset[int]:
    """The occurrence's expected members, computed once per auth TTL for the whole app
    (not per connection: fifty rooms starting a roll call at once would each read the
    whole roster, and the readers stall the event loop for everyone)."""
    def read() -> frozenset[int]:
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        return frozenset(svc.expected_member_ids(db.session, occurrence))

    cache = current_app.extensions.setdefault("attendance_expected", {})
    return _cached(cache, occurrence_id, _expected_lock, read)


def _require_check_in_scope(occurrence_id: int, site_id: int, member_ids: list[int]) -> None:
    """Another organization's walk-in is refused (see svc.require_check_in_scope); the
    expected list is cached on the connection with the operate right, so a roll call of
    expected members costs no query."""
    ids = _expected_ids(occurrence_id)
    if all(m in ids for m in member_ids):
        return
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    svc.require_check_in_scope(db.session, _caller(), occurrence,
                               svc.get_site(db.session, site_id), member_ids, ids)
    db.session.rollback()


def _actor_user_id() -> int | None:
    conn = _conn()
    return conn.ident if conn.kind == "user" else None


def roll_call_mark(data: Any) -> dict[str, Any]:
    """The operator marks one or many members present or checked out at his site."""
    occurrence_id, site_id = _require_operate(data)
    at, queued = svc.parse_client_time(data.get("at"), data.get("queued"))
    appends = svc.roll_call_appends(
        occurrence_id=occurrence_id, site_id=site_id, member_ids=data.get("member_ids"),
        state=data.get("state"), source=f"site:{site_id}", event_id=data.get("event_id"),
        actor_user_id=_actor_user_id(), client_time=at, queued=queued,
        clock_offset_ms=data.get("clock_offset_ms"), walk_in=data.get("walk_in") is True)
    _require_check_in_scope(occurrence_id, site_id, [a.member_id for a in appends])
    results = _append(Request(appends, now=utcnow()))
    live.publish_events(e for e, created in results if created)
    return {"ok": True, "stored": sum(1 for _, c in results if c),
            "repeated": sum(1 for _, c in results if not c),
            "events": [live.event_dict(e) for e, _ in results]}


def qr_token(data: Any) -> dict[str, Any]:
    """The room screen asks for the current rotating QR code (every rotation)."""
    occurrence, site = _occurrence_and_site(data)
    policy.require(_caller(), "roll_call.mark", (occurrence, site))
    rotate = settings().qr_rotate_seconds
    token, expires = svc.make_qr_token(current_app.config["SECRET_KEY"], occurrence.id,
                                       site.id, utcnow(), rotate)
    url = url_for("attendance_pages.checkin", token=token, _external=True)
    svg = segno.make(url, error="m").svg_inline(scale=5, border=2)
    code = (svc.current_room_code(current_app.config["SECRET_KEY"], occurrence.id, site.id,
                                  utcnow(), rotate) if site.checkin_code_required else None)
    db.session.rollback()
    return {"ok": True, "token": token, "url": url, "svg": svg, "code": code,
            "expires_at": expires.isoformat(), "rotate_seconds": rotate}


#: A stored heartbeat waits up to this long (seconds) for others to share its commit:
#: nobody waits for its ack, and 10,000 phones store 165 a second (one per member and
#: minute), which at the writer's 10 ms made a transaction of one or two each (a quarter
#: of an idle web process's CPU, bench/stack.py). A check-in arriving meanwhile is not
#: held up: the batch is written when the check-in's own 10 ms are up.
HEARTBEAT_LINGER = 0.25


def _viewer_event(data: Any, kind: str) -> dict[str, Any]:
    """A member watching alone reports join, heartbeat or leave for himself only."""
    occurrence_id = _int(data, "occurrence_id")
    event_id = svc.clean_event_id(data.get("event_id"))

    def who() -> tuple[int, str]:
        member = svc.member_of(_caller())
        return member.id, member.name

    member_id, name = _granted_or_check(("member",), who)

    def expected() -> bool:
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        if not svc.is_expected(db.session, occurrence, member_id):
            raise Forbidden("您不在本次学习活动的应到名单中",
                            details={"occurrence_id": occurrence.id})
        return True

    _granted_or_check(("viewing", occurrence_id), expected)
    seen = watching.watching()
    if kind != "viewer_leave" and settings().viewer_requires_media \
            and not seen.holds(occurrence_id, member_id):
        raise Conflict("未检测到您的直播画面连接：请先打开直播画面，画面播放后才计入学习时长",
                       code="no_media_session", details={"occurrence_id": occurrence_id})
    if kind == "viewer_heartbeat" and not seen.due(
            occurrence_id, member_id, watching.coalesce_seconds(settings())):
        return {"ok": True, "stored": False, "coalesced": True}
    [(event, created)] = _append(Request([Append(
        occurrence_id=occurrence_id, type=kind, source=f"viewer:member:{member_id}",
        event_id=event_id, member_id=member_id, actor_user_id=_actor_user_id())],
        now=utcnow(), linger=HEARTBEAT_LINGER if kind == "viewer_heartbeat" else None))
    if kind != "viewer_heartbeat":
        seen.stored(occurrence_id, member_id)
    if created and kind != "viewer_heartbeat":
        live.publish_events([event], {member_id: name})
    return {"ok": True, "stored": created, "event": live.event_dict(event)}


def viewer_join(data: Any) -> dict[str, Any]:
    """A member's own page starts playing the lecture."""
    return _viewer_event(data, "viewer_join")


def viewer_heartbeat(data: Any) -> dict[str, Any]:
    """Every ~15 s while the member's page is visible and the video plays."""
    return _viewer_event(data, "viewer_heartbeat")


def viewer_leave(data: Any) -> dict[str, Any]:
    """The member stops watching (pauses, closes the page)."""
    return _viewer_event(data, "viewer_leave")


def dashboard_join(data: Any) -> dict[str, Any]:
    """An organizer or admin in scope opens the dashboard: snapshot now, deltas later."""
    occurrence = svc.get_occurrence(db.session, _int(data, "occurrence_id"))
    caller = _caller()
    policy.require(caller, "attendance.manage", occurrence)
    scope = svc.member_scope(db.session, caller, occurrence)
    # An organizer of one organization of a joint occurrence gets the counts room:
    # the dashboard's room carries every member's name.
    join_room(live.occurrence_room(occurrence.id) if scope is None
              else live.counts_room(occurrence.id))
    snap = svc.snapshot(db.session, occurrence, config=settings(), now=utcnow(),
                        name_visible=scope)
    db.session.rollback()
    return {"ok": True, "snapshot": snap}


def broadcast_join(data: Any) -> dict[str, Any]:
    """The trainer's broadcast page: per-site headcounts, then deltas."""
    occurrence = svc.get_occurrence(db.session, _int(data, "occurrence_id"))
    policy.require(_caller(), "attendance.view", occurrence)
    join_room(live.counts_room(occurrence.id))  # not the dashboard's room: no names
    snap = svc.snapshot(db.session, occurrence, config=settings(), now=utcnow(),
                        with_names=False)
    db.session.rollback()
    return {"ok": True, "snapshot": snap}


#: Events sent often by many connections, handled in an app context only (`on_hot`): they
#: read their caller from the connection's `_Conn`, never from the request or session.
HOT = frozenset({"ping", "roll_call:mark", "viewer:join", "viewer:heartbeat", "viewer:leave"})

HANDLERS = {
    "connect": connect,
    "disconnect": disconnect,
    "ping": ping,
    "site:join": site_join,
    "roll_call:mark": roll_call_mark,
    "qr:token": qr_token,
    "viewer:join": viewer_join,
    "viewer:heartbeat": viewer_heartbeat,
    "viewer:leave": viewer_leave,
    "dashboard:join": dashboard_join,
    "broadcast:join": broadcast_join,
}
