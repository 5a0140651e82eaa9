"""The group-commit writer: one thread per app appends attendance events in batches.

Handlers validate and authorize (cheaply, from caches), then hand an `Append` request to
the app's `GroupWriter` and wait on its future. The writer thread takes whatever requests
are queued (up to `MAX_BATCH` events, or what arrives within the linger of the first:
YUANJIAO_ATTENDANCE_WRITE_LINGER_MS),
and in one transaction:

1. takes its write turn (SQLite: ``BEGIN IMMEDIATE`` under the process lock; PostgreSQL:
   the occurrence's advisory lock *shared*, then an exclusive advisory lock per member of
   the batch, in member order: writers of several processes serialize only on a member
   they both touch, so the two-site rule holds across processes, while their batches of
   different members commit side by side; an occurrence's lock or unlock takes the
   occurrence's lock exclusively, and so falls between two batches);
2. looks up, set-based, the stored events of every ``(occurrence, source, event_id)`` key
   (repeats), the occurrences with their lock, the members, and the open check-ins of the
   members being checked in;
3. applies the per-event rules of `service.record_event` in queue order, with the batch's
   own accepted events as extra state (a duplicate within the batch is a repeat; a second
   check-in at another site within the batch is refused);
4. inserts the accepted events with one executemany and commits once;
5. only then resolves each request's future, so a handler acks committed facts only.

A refused request (a DomainError) fails alone; a database error fails the batch, which is
then retried one request per transaction, so one bad request never fails the others.

SQLite has one write lock per database; the process lock (`serialized_write`) keeps this
thread and the rare other writers of the process (corrections, locks, screens going online)
from sleeping in SQLite's busy handler.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Flask, has_app_context
from sqlalchemy import Connection, Table, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from attendance import rules as R
from attendance.errors import (
    CheckedInElsewhere,
    Conflict,
    DomainError,
    Locked,
    NotFound,
    QrRefused,
    ValidationError,
)
from attendance.log import MEMBER_EVENT_TYPES, bound_time, offline_max, queued_payload
from attendance.models import EVENT_TYPES, AttendanceEvent, OccurrenceReview
from attendance.presence import site_counts
from config import settings
from core.appctx import app_object
from extensions import db

log = logging.getLogger(__name__)

_write_lock = threading.Lock()

#: At most this many events per transaction (keeps IN lists and the lock hold short).
MAX_BATCH = 500
#: A handler gives up waiting after this long (the event may still be stored; the client
#: retries with the same event id and gets the stored event).
WAIT_SECONDS = 30.0
#: PostgreSQL: refresh the events table's statistics once this many events are stored
#: (then each time the table doubles).
ANALYZE_FROM = 1000
#: The writer thread ends after this long without work; the next request starts another.
IDLE_SECONDS = 30.0
#: Namespace of the PostgreSQL advisory locks (first key of the two-key form): "YJAT".
ADVISORY_CLASS = 0x594A4154 - (1 << 32) if 0x594A4154 >= (1 << 31) else 0x594A4154
#: Namespace of the per-member advisory locks of the writer's batches: "YJAM".
MEMBER_CLASS = 0x594A414D
EVENTS = cast(Table, AttendanceEvent.__table__)
OPENING_OR_CLOSING = tuple(R.OPENING | {"check_out"})


def idle_callers_session() -> None:
    """Before a caller waits for the writer, its database session gives its pooled
    connection back (the read transaction ends; rows it loaded reload when next read).

    Under gevent hundreds of handlers wait for commits at once: holding their connections
    while they waited, they emptied the pool, and the writer, which takes its connection
    from the same pool once its queue has run dry, waited for one of theirs until the
    pool's timeout (30 s: `QueuePool limit ... reached` in bench/stack.py at 5,000
    connections a process). A session with changes of its own is left alone."""
    if not has_app_context() or not db.session.registry.has():  # type: ignore[attr-defined]
        return
    session = db.session()  # type: ignore[operator]
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.rollback()


#: A batch's advisory locks (PostgreSQL): its occurrences' shared, then its members'.
_LOCKS = text(
    "SELECT count(*) FROM ("
    "SELECT pg_advisory_xact_lock_shared(:oc, o) FROM "
    "(SELECT o FROM unnest(CAST(:occs AS integer[])) AS o ORDER BY o) AS so "
    "UNION ALL "
    "SELECT pg_advisory_xact_lock(:mc, m) FROM "
    "(SELECT m FROM unnest(CAST(:ids AS integer[])) AS m ORDER BY m) AS sm) AS locks")

#: The most the default linger is multiplied by for the number of web processes.
MAX_SPREAD = 4
#: With several processes, each writer also waits for what one commit takes, per other
#: process (see `GroupWriter.spread_linger`), counted at most this long.
MAX_COMMIT_WAIT = 0.02
#: Weight of the newest batch in the writer's running mean of a commit's duration.
COMMIT_EWMA_WEIGHT = 0.1


class Busy(DomainError):
    """The writer did not answer in time: retry with the same event id."""

    status = 503
    code = "attendance_busy"


@contextlib.contextmanager
def serialized_write() -> Iterator[None]:
    """Hold the process's SQLite write turn for an append-and-commit (no-op elsewhere)."""
    if db.engine.dialect.name != "sqlite":
        yield
        return
    with _write_lock:
        yield


def lock_occurrence(session: Session, occurrence_id: int) -> None:
    """Take the occurrence's write turn in this transaction (PostgreSQL; see module doc).

    Locking and unlocking take it too, so that a lock takes effect between two batches.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:c, :o)"),
                        {"c": ADVISORY_CLASS, "o": occurrence_id})


class Answer:
    """A one-shot result slot, lighter than `concurrent.futures.Future` (one C lock, no
    Condition): every handler thread creates one per event."""

    __slots__ = ("_done", "_exc", "_value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._value: Any = None
        self._exc: BaseException | None = None

    def done(self) -> bool:
        if self._done.acquire(blocking=False):
            self._done.release()
            return True
        return False

    def set_result(self, value: Any) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self._exc = exc
        self._done.release()

    def _wait(self, timeout: float | None) -> None:
        if not self._done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError
        self._done.release()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._exc

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._exc is not None:
            raise self._exc
        return self._value


@dataclass
class Append:
    """One event to append; the fields of `AttendanceEvent` (event_id already cleaned)."""

    occurrence_id: int
    type: str
    source: str
    event_id: str
    member_id: int | None = None
    site_id: int | None = None
    actor_user_id: int | None = None
    #: The client's claimed time, bounded by the writer against the occurrence.
    client_time: dt.datetime | None = None
    payload: dict | None = None
    #: Queued offline: `client_time` is the mark's own time (see service.bound_time).
    queued: bool = False
    #: A queued mark's device clock offset (ms), kept in its payload (离线补传).
    clock_offset_ms: Any = None


@dataclass
class Request:
    """Appends stored all together or not at all; the future gets [(event, created)]."""

    appends: list[Append]
    now: dt.datetime
    check_lock: bool = True
    #: Raise this instead of answering with the stored event when a key repeats (QR reuse).
    repeat_error: DomainError | None = None
    #: How long this request may wait for others to share its commit (seconds); None:
    #: the writer's YUANJIAO_ATTENDANCE_WRITE_LINGER_MS times the web processes sharing the
    #: load (`GroupWriter.spread`). A batch is written once its most
    #: hurried request's wait is up, so a patient request never delays a hurried one.
    linger: float | None = None
    future: Answer = field(default_factory=lambda: Answer())

    @property
    def size(self) -> int:
        return len(self.appends)


@dataclass
class Task:
    """A change beside the appends that must be ordered and committed like them: an
    organizer's correction, a leave decision, a lock. `fn(session, now)` runs on the
    writer thread, between two batches, in a transaction of its own (the ORM session of
    the writer's app context); the future gets its result once committed, or its
    DomainError. A lock therefore takes effect exactly between two batches, and a
    correction is never acknowledged before it is on disk."""

    fn: Callable[[Session, dt.datetime], Any]
    now: dt.datetime
    future: Answer = field(default_factory=lambda: Answer())
    size: int = 1


@dataclass(frozen=True)
class _Fact:
    """What `rules.checked_in_site` needs of an event."""

    member_id: int | None
    type: str
    site_id: int | None
    at: dt.datetime


def _event(row: dict[str, Any]) -> AttendanceEvent:
    """A detached event object from a row (answers and live updates read its fields)."""
    return AttendanceEvent(**row)


class GroupWriter:
    """The app's writer thread and queue (see the module docstring)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.queue: queue.SimpleQueue[Request | Task] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_time: dt.datetime | None = None
        self._conn: Connection | None = None
        #: A task met while collecting a batch: it runs right after that batch.
        self._held: Task | None = None
        #: Events this writer stored since it last refreshed the planner's statistics
        #: (PostgreSQL), and the table's size then.
        self._since_analyze = 0
        self._analyzed_rows = 0
        self._analyzing = False
        #: Counters for the benchmark and the logs: batches, events, requests.
        self.stats = {"batches": 0, "requests": 0, "events": 0, "fallbacks": 0}
        #: When the last request someone waits for came (a check-in, a mark; not a
        #: heartbeat): `writer_quiet`.
        self.last_hurried = float("-inf")
        #: After the first request of a batch, wait this long for more (seconds): a small
        #: price in latency that lets a burst share one commit.
        self.linger = settings(app).attendance_write_linger_ms / 1000
        #: How long a batch takes from its first query to its commit (a running mean).
        self.commit_seconds = 0.0

    # --- the handler side ---------------------------------------------------------------

    def submit(self, request: Request) -> Answer:
        """Queue a request (starting the thread if needed); returns its future."""
        if request.linger is None:
            self.last_hurried = time.monotonic()
        self.queue.put(request)
        self._ensure_thread()
        return request.future

    def append(self, request: Request, timeout: float = WAIT_SECONDS, *,
               on_queued: Callable[[], None] | None = None
               ) -> list[tuple[AttendanceEvent, bool]]:
        """Submit and wait until committed; raises the request's DomainError if refused.

        `on_queued` runs once the request is in the queue, before the wait."""
        idle_callers_session()
        future = self.submit(request)
        if on_queued is not None:
            on_queued()
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            raise Busy("考勤写入繁忙，请用同一 event_id 重试") from exc

    def run(self, task: Task, timeout: float = WAIT_SECONDS) -> Any:
        """Submit a task and wait until it is committed; raises its DomainError."""
        idle_callers_session()
        self.queue.put(task)
        self._ensure_thread()
        try:
            return task.future.result(timeout)
        except TimeoutError as exc:
            raise Busy("考勤写入繁忙，请稍后重试") from exc

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="attendance-writer",
                                                daemon=True)
                self._thread.start()

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        with self.app.app_context():
            engine = db.engine
        while True:
            first: Request | Task
            if self._held is not None:
                first, self._held = self._held, None
            else:
                try:
                    first = self.queue.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self._start_lock:
                        if self.queue.empty():
                            self._thread = None
                            return
                    continue
            if isinstance(first, Task):
                self._run_task(first)
                continue
            batch = [first]
            size = first.size
            deadline = time.monotonic() + self._linger(first)
            while size < MAX_BATCH:
                wait = deadline - time.monotonic()
                try:
                    nxt = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, Task):  # after this batch, in its turn
                    self._held = nxt
                    break
                batch.append(nxt)
                size += nxt.size
                deadline = min(deadline, time.monotonic() + self._linger(nxt))
            try:
                self._process(engine, batch)
            except Exception:  # never let the thread die with futures unanswered
                log.exception("attendance writer failed on a batch of %d", len(batch))
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(DomainError("考勤写入失败", code="write_failed"))
            finally:
                if self.queue.empty():
                    self.release_connection()

    def _linger(self, request: Request) -> float:
        if request.linger is not None:
            return request.linger
        return self.spread_linger(self.spread())

    def spread_linger(self, n: int) -> float:
        """How long a batch waits for more when `n` processes share the check-ins.

        One writer's batch holds what came while the previous one committed (C) and
        while it lingered (L): rate x (L + C). Each of n writers gets rate / n, so its
        batch is rate / n x (L' + C); it equals one writer's when L' = n L + (n - 1) C.
        Lingering only n L (as at first) left two processes' batches two-thirds the size
        (13.4 against 20 check-ins per commit at 1,000 check-ins/s, bench/stack.py), and
        each commit's round trips and rules cost CPU per check-in again. C is this
        writer's running mean, counted at most `MAX_COMMIT_WAIT` (a slow database must
        not make everyone wait longer still)."""
        if n <= 1:
            return self.linger
        return self.linger * n + min(self.commit_seconds, MAX_COMMIT_WAIT) * (n - 1)

    def spread(self) -> int:
        """How many writers share the load: the web processes alive (Redis's registry,
        attendance/presence.py), at most `MAX_SPREAD` (`spread_linger`)."""
        return max(1, min(MAX_SPREAD, site_counts(self.app).processes))

    def _run_task(self, task: Task) -> None:
        """One task in its own transaction, in queue order (see `Task`)."""
        with self.app.app_context():
            session = db.session
            try:
                with serialized_write():
                    result = task.fn(session, task.now)
                    session.commit()
                if isinstance(result, db.Model):
                    session.refresh(result)
                    session.expunge(result)  # readable after this session ends
                task.future.set_result(result)
            except DomainError as exc:
                session.rollback()
                task.future.set_exception(exc)
            except Exception:
                session.rollback()
                log.exception("attendance writer task failed")
                task.future.set_exception(DomainError("考勤写入失败", code="write_failed"))
            finally:
                db.session.remove()

    def _process(self, engine, batch: list[Request]) -> None:
        try:
            started = time.monotonic()
            outcomes = self._commit_batch(engine, batch)
            self.commit_seconds += COMMIT_EWMA_WEIGHT * (
                time.monotonic() - started - self.commit_seconds)
        except (DBAPIError, IntegrityError) as exc:
            if len(batch) == 1:
                outcomes = self._retry_single(engine, batch[0], exc)
            else:
                # One request may have caused it (e.g. another process stored the same key
                # a moment ago): give each its own transaction.
                self.stats["fallbacks"] += 1
                log.warning("attendance batch of %d failed (%s); retrying one by one",
                            len(batch), exc.__class__.__name__)
                for req in batch:
                    self._process(engine, [req])
                return
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        for req, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                req.future.set_exception(outcome)
            else:
                created = sum(1 for _, c in outcome if c)
                self.stats["events"] += created
                self._since_analyze += created
                req.future.set_result(outcome)
        self._maybe_analyze(engine)

    def _maybe_analyze(self, engine) -> None:
        """PostgreSQL: refresh the events table's statistics each time it has doubled.

        The planner picks the writer's indexes by these statistics; a young table (a new
        deployment's first big lecture) would otherwise be planned as nearly empty until
        autovacuum gets to it. ANALYZE runs on its own connection and thread, never in a
        batch's way, one at a time; doubling keeps it to a few runs in a table's life.
        """
        if (engine.dialect.name != "postgresql" or self._analyzing
                or self._since_analyze < max(ANALYZE_FROM, self._analyzed_rows)):
            return
        self._analyzing = True
        self._since_analyze = 0

        def run() -> None:
            try:
                with engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql(f"ANALYZE {EVENTS.name}")
                    rows = conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = :t"),
                                       {"t": EVENTS.name})
                    self._analyzed_rows = max(int(rows or 0), 0)
            except Exception:
                log.exception("ANALYZE %s failed", EVENTS.name)
            finally:
                self._analyzing = False

        threading.Thread(target=run, name="attendance-analyze", daemon=True).start()

    def _retry_single(self, engine, req: Request, exc: Exception) -> list:
        """A lone request's database error: a concurrent duplicate is seen on retry."""
        if isinstance(exc, IntegrityError):
            try:
                return self._commit_batch(engine, [req])
            except (DBAPIError, IntegrityError) as again:
                exc = again
        log.error("attendance append failed: %s", exc)
        return [DomainError("考勤写入失败，请用同一 event_id 重试", code="write_failed")]

    def _server_time(self, now: dt.datetime) -> dt.datetime:
        """Request times made monotonic, so id order and time order agree in a process."""
        if self._last_time is not None and now < self._last_time:
            now = self._last_time
        self._last_time = now
        return now

    def _connection(self, engine) -> Connection:
        """The writer's connection, kept from batch to batch while requests are queued and
        given back to the pool when the queue runs dry: in a burst, a batch never queues
        for a connection behind the request handlers (with 2,000 connected pages, that
        wait made batches of 40 events take 200-700 ms)."""
        if self._conn is None or self._conn.closed:
            self._conn = engine.connect()
        return self._conn

    def release_connection(self) -> None:
        """Give the connection back to the pool (queue empty, or a database error)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _commit_batch(self, engine, batch: Sequence[Request]) -> list:
        sqlite = engine.dialect.name == "sqlite"
        with contextlib.ExitStack() as stack:
            if sqlite:
                stack.enter_context(_write_lock)
            conn = self._connection(engine)
            if sqlite:
                # Reads and writes in one write transaction: no other writer (of any
                # process) between the lock check and the insert.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                outcomes, rows = self._decide(conn, batch, postgres=not sqlite)
                if rows:
                    ids = conn.scalars(
                        insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True),
                        [r for r, _ in rows]).all()
                    for (row, _), new_id in zip(rows, ids, strict=True):
                        row["id"] = new_id
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                self.release_connection()  # a broken connection is not reused
                raise
        # Only now, after the commit, are the new events real.
        for out in outcomes:
            if isinstance(out, list):
                for i, item in enumerate(out):
                    if isinstance(item, dict):
                        out[i] = (_event(item), True)
                    elif isinstance(item, _LaterEvent):
                        out[i] = (_event(item.row), False)
        return outcomes

    def _decide(self, conn: Connection, batch: Sequence[Request], *, postgres: bool
                ) -> tuple[list, list]:
        """Per request: a list of (event or new row, created), or its DomainError."""
        appends = [a for req in batch for a in req.appends]
        occ_ids = sorted({a.occurrence_id for a in appends})
        if postgres:
            # The occurrences' locks, shared: another process's batch proceeds beside this
            # one; a lock or unlock of the occurrence (exclusive, lock_occurrence) waits for
            # both, and they for it. Then the members', in member order in every process:
            # no deadlock between writers. One statement, one round trip: UNION ALL runs
            # its branches one after the other, each over its sorted ids.
            conn.execute(_LOCKS, {"oc": ADVISORY_CLASS, "occs": occ_ids, "mc": MEMBER_CLASS,
                                  "ids": sorted({a.member_id for a in appends
                                                 if a.member_id is not None})})
        stored = _stored(conn, [(a.occurrence_id, a.source, a.event_id) for a in appends])
        occurrences = _occurrences(conn, occ_ids)
        member_ids = {a.member_id for a in appends if a.member_id is not None}
        members = _member_status(conn, member_ids)
        checking_in = {(a.occurrence_id, a.member_id) for a in appends
                       if a.type in R.OPENING and a.member_id is not None}
        facts = _open_facts(conn, checking_in)
        new: dict[tuple[int, str, str], dict[str, Any]] = {}
        outcomes: list = []
        rows: list[tuple[dict[str, Any], Request]] = []
        for req in batch:
            now = self._server_time(req.now)
            staged: list[dict[str, Any]] = []
            staged_facts: list[tuple[tuple[int, int], _Fact]] = []
            out: list = []
            try:
                for a in req.appends:
                    key = (a.occurrence_id, a.source, a.event_id)
                    if key in stored or key in new:
                        if req.repeat_error is not None:
                            raise req.repeat_error
                        out.append((stored[key], False) if key in stored
                                   else _LaterEvent(new[key]))
                        continue
                    if any((r["occurrence_id"], r["source"], r["event_id"]) == key
                           for r in staged):
                        continue  # the same key twice in one request: stored once
                    row = self._check(conn, a, req, now, occurrences, members, facts,
                                      staged_facts)
                    staged.append(row)
                    out.append(row)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            for row in staged:
                key = (row["occurrence_id"], row["source"], row["event_id"])
                new[key] = row
                rows.append((row, req))
            for mkey, fact in staged_facts:
                facts.setdefault(mkey, []).append(fact)
            outcomes.append(out)
        return outcomes, rows

    def _check(self, conn: Connection, a: Append, req: Request, now: dt.datetime, occurrences: dict,
               members: dict, facts: dict, staged_facts: list) -> dict[str, Any]:
        """The rules of `service.record_event`, on prefetched state; returns the new row."""
        if a.type not in EVENT_TYPES:
            raise ValidationError(f"未知事件类型：{a.type}", field="type")
        occ = occurrences.get(a.occurrence_id)
        if occ is None:
            raise NotFound(f"学习活动不存在：{a.occurrence_id}",
                           details={"occurrence_id": a.occurrence_id})
        if req.check_lock and occ.locked:
            raise Locked("该学习活动的考勤已审核锁定", details={"occurrence_id": occ.id})
        if occ.status == "cancelled":
            raise Conflict("该学习活动已取消", code="occurrence_cancelled")
        at = bound_time(occ, a.client_time, now, queued=a.queued,
                        max_delay=offline_max(settings(self.app)))
        payload = queued_payload(a.queued, a.payload, a.clock_offset_ms)
        if a.type in MEMBER_EVENT_TYPES:
            if a.member_id is None:
                raise ValidationError("member_id 必填", field="member_id")
            status = members.get(a.member_id)
            if status is None:
                raise NotFound(f"党员不存在：{a.member_id}", details={"member_id": a.member_id})
            if status != "active":
                raise ValidationError("该党员不在册（已转出）", field="member_id")
        fact = _Fact(a.member_id, a.type, a.site_id, at or now)
        mkey = (a.occurrence_id, a.member_id)
        if a.type in R.OPENING and a.member_id is not None:
            known = facts.get(mkey, []) + [f for k, f in staged_facts if k == mkey]
            current = R.checked_in_site(known, a.member_id)
            if current is not None and current != a.site_id:
                from org.models import Site

                name = conn.scalar(select(Site.__table__.c.name).where(
                    Site.__table__.c.id == current))
                raise CheckedInElsewhere(
                    f"该党员已在其他学习点签到：{name or current}",
                    details={"member_id": a.member_id, "site_id": current, "site_name": name})
        # Pairs with a check-in in this batch are tracked: later events of the batch see
        # this one (a check-out in between reopens the member for another site).
        if a.type in OPENING_OR_CLOSING and mkey in facts:
            staged_facts.append((mkey, fact))
        return {"occurrence_id": a.occurrence_id, "member_id": a.member_id,
                "site_id": a.site_id, "type": a.type, "source": a.source,
                "event_id": a.event_id, "server_time": now, "client_time": at,
                "actor_user_id": a.actor_user_id, "payload": payload or {}}


class _LaterEvent:
    """A repeat, within one batch, of a row not yet inserted: resolved after the commit."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row


def _stored(conn: Connection, keys: list[tuple[int, str, str]]
            ) -> dict[tuple[int, str, str], AttendanceEvent]:
    """Stored events of these (occurrence, source, event_id) keys."""
    out: dict[tuple[int, str, str], AttendanceEvent] = {}
    wanted = set(keys)
    by_occ: dict[int, list[tuple[str, str]]] = {}
    for occ_id, source, event_id in wanted:
        by_occ.setdefault(occ_id, []).append((source, event_id))
    # One IN list per column, not a list of row values: every column is then a condition
    # of the unique index (PostgreSQL cannot search an index with an OR of row values).
    # The product of the lists may match more rows than asked for; those are dropped.
    for occ_id, pairs in by_occ.items():
        for start in range(0, len(pairs), 300):
            chunk = pairs[start:start + 300]
            q = select(EVENTS).where(EVENTS.c.occurrence_id == occ_id,
                                     EVENTS.c.source.in_({s for s, _ in chunk}),
                                     EVENTS.c.event_id.in_({e for _, e in chunk}))
            for row in conn.execute(q).mappings():
                key = (row["occurrence_id"], row["source"], row["event_id"])
                if key in wanted:
                    out[key] = _event(dict(row))
    return out


def _occurrences(conn: Connection, occ_ids: list[int]) -> dict[int, Any]:
    """id -> row(id, status, starts_at, ends_at, locked), read inside the transaction."""
    from sessions.models import Occurrence

    occ, review = Occurrence.__table__, OccurrenceReview.__table__
    q = (select(occ.c.id, occ.c.status, occ.c.starts_at, occ.c.ends_at,
                review.c.locked)
         .select_from(occ.outerjoin(review, review.c.occurrence_id == occ.c.id))
         .where(occ.c.id.in_(occ_ids)))
    return {row.id: row for row in conn.execute(q)}


def _member_status(conn: Connection, member_ids: set[int]) -> dict[int, str]:
    from org.models import Member

    out: dict[int, str] = {}
    ids = sorted(member_ids)
    table = Member.__table__
    for start in range(0, len(ids), 500):
        out.update(conn.execute(select(table.c.id, table.c.status).where(
            table.c.id.in_(ids[start:start + 500]))).all())
    return out


def _open_facts(conn: Connection, pairs: set[tuple[int, int]]
                ) -> dict[tuple[int, int], list[_Fact]]:
    """Check-ins and check-outs of these (occurrence, member) pairs, in log order."""
    out: dict[tuple[int, int], list[_Fact]] = {p: [] for p in pairs}
    by_occ: dict[int, list[int]] = {}
    for occ_id, member_id in pairs:
        by_occ.setdefault(occ_id, []).append(member_id)
    for occ_id, mids in by_occ.items():
        mids.sort()
        for start in range(0, len(mids), 500):
            q = (select(EVENTS.c.member_id, EVENTS.c.type, EVENTS.c.site_id,
                        EVENTS.c.server_time, EVENTS.c.client_time)
                 .where(EVENTS.c.occurrence_id == occ_id,
                        EVENTS.c.member_id.in_(mids[start:start + 500]),
                        EVENTS.c.type.in_(OPENING_OR_CLOSING))
                 .order_by(EVENTS.c.id))
            for m, type_, site, server_time, client_time in conn.execute(q):
                out[(occ_id, m)].append(_Fact(m, type_, site, client_time or server_time))
    return out


#: No check-in for this long (seconds): a quiet moment (for the collector's full walk).
QUIET_SECONDS = 30.0


def writer_quiet(app: Flask) -> bool:
    """No check-in or mark reached this process's writer for `QUIET_SECONDS` (heartbeats
    do not count: nobody waits on them): a stall now would hold up no roll call."""
    writer = app.extensions.get("attendance_writer")
    return writer is None or time.monotonic() - writer.last_hurried >= QUIET_SECONDS


def writer_for(app: Flask | None = None) -> GroupWriter:
    """The app's writer, created on first use (never at import)."""
    app = app or app_object()
    writer = app.extensions.get("attendance_writer")
    if writer is None:
        with _create_lock:
            writer = app.extensions.get("attendance_writer")
            if writer is None:
                writer = app.extensions["attendance_writer"] = GroupWriter(app)
    return writer


_create_lock = threading.Lock()

__all__ = ["Append", "Busy", "GroupWriter", "QrRefused", "Request", "Task",
           "idle_callers_session", "lock_occurrence", "serialized_write", "writer_for",
           "writer_quiet"]
