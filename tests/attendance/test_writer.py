"""The group-commit writer: per-request outcomes inside one batch, acks only after commit."""

from __future__ import annotations

import contextlib
import threading
import time

from sqlalchemy import func, select, text

from attendance import service as svc
from attendance.errors import CheckedInElsewhere, Locked, NotFound, QrRefused, ValidationError
from attendance.models import AttendanceEvent
from attendance.writer import ADVISORY_CLASS, Append, GroupWriter, Request, writer_for
from config import settings
from core.types import utcnow
from extensions import db


def _check_in(scene, member, site, event_id: str, *, type_: str = "check_in") -> Append:
    return Append(occurrence_id=scene.occurrence.id, type=type_, source=f"site:{site.id}",
                  event_id=event_id, member_id=member.id, site_id=site.id)


def _batch(app, *requests: Request) -> list:
    """Run these requests as ONE batch on a fresh writer, synchronously; their outcomes."""
    writer = GroupWriter(app)
    writer._process(db.engine, list(requests))
    writer.release_connection()  # as the writer thread does when its queue is empty
    assert writer.stats["batches"] == 1
    assert writer.stats["fallbacks"] == 0
    assert writer.commit_seconds > 0  # measured: the linger of several processes uses it
    out = []
    for req in requests:
        exc = req.future.exception(0)
        out.append(exc if exc is not None else req.future.result(0))
    return out


def _stored(scene, **where) -> list[AttendanceEvent]:
    db.session.rollback()  # a fresh read: the writer committed on its own connection
    q = select(AttendanceEvent).where(AttendanceEvent.occurrence_id == scene.occurrence.id)
    for key, value in where.items():
        q = q.where(getattr(AttendanceEvent, key) == value)
    return list(db.session.scalars(q.order_by(AttendanceEvent.id)))


def test_a_duplicate_within_one_batch_is_stored_once_and_both_get_the_stored_event(
        app, scene):
    m = scene.members[0]
    first, second = _batch(app, Request([_check_in(scene, m, scene.site_a, "e1")], utcnow()),
                           Request([_check_in(scene, m, scene.site_a, "e1")], utcnow()))
    [(ev1, created1)], [(ev2, created2)] = first, second
    assert (created1, created2) == (True, False)
    assert ev1.id == ev2.id
    assert ev1.id is not None
    assert ev2.event_id == "e1"
    assert ev2.member_id == m.id
    assert [e.id for e in _stored(scene, event_id="e1")] == [ev1.id]
    # ... and a retry in a later batch gets the same stored event.
    [[(ev3, created3)]] = _batch(app, Request([_check_in(scene, m, scene.site_a, "e1")],
                                              utcnow()))
    assert (ev3.id, created3) == (ev1.id, False)


def test_a_second_site_within_one_batch_is_refused_and_not_stored(app, scene):
    m, other = scene.members[0], scene.members[1]
    a, b, c = _batch(app,
                     Request([_check_in(scene, m, scene.site_a, "a1")], utcnow()),
                     Request([_check_in(scene, m, scene.site_b, "b1")], utcnow()),
                     Request([_check_in(scene, other, scene.site_b, "b2")], utcnow()))
    assert a[0][1] is True
    assert c[0][1] is True
    assert isinstance(b, CheckedInElsewhere)
    assert b.details["site_id"] == scene.site_a.id
    assert b.details["site_name"] == "一号会议室"
    assert _stored(scene, event_id="b1") == []
    # A check-out in between (same batch) frees the member for the other site.
    out = _batch(app,
                 Request([Append(occurrence_id=scene.occurrence.id, type="check_out",
                                 source=f"site:{scene.site_a.id}", event_id="o1",
                                 member_id=m.id, site_id=scene.site_a.id)], utcnow()),
                 Request([_check_in(scene, m, scene.site_b, "b3")], utcnow()),
                 Request([_check_in(scene, m, scene.site_a, "a2")], utcnow()))
    assert out[0][0][1] is True
    assert out[1][0][1] is True
    assert isinstance(out[2], CheckedInElsewhere)
    assert out[2].details["site_id"] == \
        scene.site_b.id


def test_an_error_in_one_request_does_not_fail_the_others(app, scene):
    ok1 = Request([_check_in(scene, scene.members[0], scene.site_a, "x1")], utcnow())
    unknown = Request([Append(occurrence_id=scene.occurrence.id, type="check_in",
                              source="site:x", event_id="x2", member_id=999_999,
                              site_id=scene.site_a.id)], utcnow())
    bad_type = Request([Append(occurrence_id=scene.occurrence.id, type="teleport",
                               source="site:x", event_id="x3")], utcnow())
    # All or nothing within a request: one bad member refuses the whole roll call.
    partial = Request([_check_in(scene, scene.members[2], scene.site_b, "x4"),
                       _check_in(scene, scene.outsider, scene.site_b, "x5"),
                       Append(occurrence_id=scene.occurrence.id, type="check_in",
                              source="site:x", event_id="x6", member_id=999_998,
                              site_id=scene.site_b.id)], utcnow())
    ok2 = Request([_check_in(scene, scene.members[1], scene.site_a, "x7")], utcnow())
    out = _batch(app, ok1, unknown, bad_type, partial, ok2)
    assert out[0][0][1] is True
    assert out[4][0][1] is True
    assert isinstance(out[1], NotFound)
    assert isinstance(out[2], ValidationError)
    assert isinstance(out[3], NotFound)
    assert {e.event_id for e in _stored(scene)} == {"x1", "x7"}


def test_a_lock_refuses_the_next_batch_and_a_repeat_is_still_answered(app, db_session, scene):
    m = scene.members[0]
    [[(stored, _)]] = _batch(app, Request([_check_in(scene, m, scene.site_a, "l1")],
                                          utcnow()))
    occ = svc.get_occurrence(db_session, scene.occurrence.id)
    svc.set_lock(db_session, occurrence=occ, locked=True, user=scene.users["organizer"],
                 now=utcnow(), early=True, reason="测试")
    db_session.commit()
    repeat, fresh = _batch(app,
                           Request([_check_in(scene, m, scene.site_a, "l1")], utcnow()),
                           Request([_check_in(scene, scene.members[1], scene.site_a, "l2")],
                                   utcnow()))
    assert repeat[0][0].id == stored.id
    assert repeat[0][1] is False
    assert isinstance(fresh, Locked)
    assert _stored(scene, event_id="l2") == []


def test_qr_reuse_is_refused_even_within_one_batch(app, scene):
    m = scene.members[0]
    reuse = QrRefused("该二维码您已使用过", code="qr_reused")
    first, again = _batch(
        app,
        Request([_check_in(scene, m, scene.site_a, "digest", type_="qr_check_in")], utcnow(),
                repeat_error=reuse),
        Request([_check_in(scene, m, scene.site_a, "digest", type_="qr_check_in")], utcnow(),
                repeat_error=reuse))
    assert first[0][1] is True
    assert isinstance(again, QrRefused)
    assert again.code == "qr_reused"


@contextlib.contextmanager
def _writer_blocked():
    """Hold the database write turn the writer needs (SQLite's or PostgreSQL's)."""
    if db.engine.dialect.name == "sqlite":
        from attendance.writer import _write_lock

        with _write_lock:
            yield
        return
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:c, :o)"),
                     {"c": ADVISORY_CLASS, "o": _writer_blocked.occurrence_id})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"),
                         {"c": ADVISORY_CLASS, "o": _writer_blocked.occurrence_id})
            conn.commit()


def test_the_future_resolves_only_after_the_commit(app, scene):
    _writer_blocked.occurrence_id = scene.occurrence.id
    writer = writer_for(app)
    with _writer_blocked():
        future = writer.submit(Request([_check_in(scene, scene.members[0], scene.site_a,
                                                  "c1")], utcnow()))
        time.sleep(0.3)
        assert not future.done()
        assert _stored(scene, event_id="c1") == []
    [(event, created)] = future.result(10)
    assert created
    # Resolved means committed: another connection sees the row at once.
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(AttendanceEvent).where(
            AttendanceEvent.id == event.id)) == 1


def test_concurrent_requests_share_batches_and_each_gets_its_answer(app, scene):
    writer = writer_for(app)
    # Appends built here: ORM rows must not be touched from other threads.
    appends = [_check_in(scene, m, scene.site_a if m.home_site_id == scene.site_a.id
                         else scene.site_b, f"p{i % 8}")
               for i in range(40) for m in [scene.members[i % 8 % 4]]]
    results: dict[int, object] = {}

    def send(i: int) -> None:
        try:
            results[i] = writer.append(Request([appends[i]], utcnow()))
        except Exception as exc:
            results[i] = exc

    _writer_blocked.occurrence_id = scene.occurrence.id
    with _writer_blocked():
        threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # everything queues behind the held write turn
    for t in threads:
        t.join(20)
    assert len(results) == 40
    assert not any(isinstance(r, Exception) for r in results.values())
    assert writer.stats["batches"] < 40
    stored = _stored(scene)
    assert len(stored) == 8  # 8 distinct event ids, each stored once
    ids = {e.event_id: e.id for e in stored}
    for i, [(event, _)] in results.items():
        assert event.id == ids[f"p{i % 8}"]
    created = [c for r in results.values() for _, c in r]
    assert sum(created) == 8


def test_postgres_statistics_are_refreshed_as_the_events_table_grows(app, scene, monkeypatch):
    """On PostgreSQL the writer runs ANALYZE once it has stored ANALYZE_FROM events (then
    each time the table doubles), so the planner keeps using the writer's indexes."""
    import pytest

    import attendance.writer as W

    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL statistics (SQLite plans without them)")
    monkeypatch.setattr(W, "ANALYZE_FROM", 3)

    def analyzed() -> int:
        with db.engine.connect() as conn:
            return conn.scalar(text("SELECT analyze_count + autoanalyze_count FROM "
                                    "pg_stat_user_tables WHERE relname = 'attendance_events'"))

    before = analyzed()
    writer = GroupWriter(app)
    writer._process(db.engine, [Request([_check_in(scene, m, scene.site_a, f"a{i}")], utcnow())
                                for i, m in enumerate(scene.members[:2])])
    assert writer._since_analyze == 2  # below the threshold: nothing runs
    writer._process(db.engine, [Request([_check_in(scene, scene.members[2], scene.site_a,
                                                   "a2")], utcnow())])
    writer.release_connection()
    deadline = time.monotonic() + 10
    while writer._analyzing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not writer._analyzing
    assert writer._since_analyze == 0
    # The statistics collector reports with a small delay.
    while analyzed() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert analyzed() > before


def test_a_lock_goes_through_the_writer_in_queue_order(app, db_session, scene):
    """Appends queued before a lock are stored; those queued after it are refused: the
    lock is a task of the writer, run between two batches, committed before its answer."""
    from types import SimpleNamespace

    from attendance.writer import Task

    writer = GroupWriter(app)
    occ_id = scene.occurrence.id
    organizer = SimpleNamespace(id=scene.users["organizer"].id, role="organizer")
    before = Request([_check_in(scene, scene.members[0], scene.site_a, "w1")], utcnow())

    def lock(session, now):
        return svc.set_lock(session, occurrence=svc.get_occurrence(session, occ_id),
                            locked=True, user=organizer, now=now, early=True, reason="测试")

    task = Task(lock, utcnow())
    after = Request([_check_in(scene, scene.members[1], scene.site_a, "w2")], utcnow())
    for item in (before, task, after):
        writer.queue.put(item)
    writer._ensure_thread()
    assert [created for _, created in before.future.result(10)] == [True]
    review = task.future.result(10)
    assert (review.occurrence_id, review.locked) == (occ_id, True)  # readable, detached
    assert isinstance(after.future.exception(10), Locked)
    assert [e.event_id for e in _stored(scene, type="check_in")] == ["w1"]
    assert len(_stored(scene, type="locked")) == 1


def test_a_refused_task_changes_nothing_and_answers_its_error(app, db_session, scene):
    from attendance.writer import Task

    def bad(session, now):
        svc.correct(session, occurrence=svc.get_occurrence(session, scene.occurrence.id),
                    member_id=scene.members[0].id, status="present", minutes=None,
                    reason="", user_id=scene.users["organizer"].id, config=settings(app),
                    now=now)

    import pytest

    with app.app_context(), pytest.raises(ValidationError) as err:
        writer_for(app).run(Task(bad, utcnow()))
    assert err.value.details["field"] == "reason"
    assert _stored(scene, type="correction") == []


def test_postgres_writers_of_two_processes_wait_only_on_a_member_they_share(app, scene):
    """Another process's writer mid-batch (the occurrence's lock shared, member 0's lock
    held): this writer's batch of member 2 commits beside it, its batch of member 0 waits
    for that commit and then sees it (the two-site rule across processes)."""
    import pytest

    from attendance.writer import MEMBER_CLASS

    if db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    occ, writer = scene.occurrence.id, writer_for(app)
    m0, m2 = scene.members[0], scene.members[2]
    other = Append(occurrence_id=occ, type="check_in", source=f"site:{scene.site_a.id}",
                   event_id="elsewhere", member_id=m0.id, site_id=scene.site_a.id)
    mine = _check_in(scene, m2, scene.site_b, "beside")
    same = _check_in(scene, m0, scene.site_b, "second-site")
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:c, :o)"),
                     {"c": ADVISORY_CLASS, "o": occ})
        conn.execute(text("SELECT pg_advisory_xact_lock(:c, :m)"),
                     {"c": MEMBER_CLASS, "m": m0.id})
        beside = writer.submit(Request([mine], utcnow()))
        [(event, created)] = beside.result(10)  # not held up by the other batch
        assert created
        assert event.member_id == m2.id
        waiting = writer.submit(Request([same], utcnow()))
        time.sleep(0.3)
        assert not waiting.done()
        conn.execute(AttendanceEvent.__table__.insert().values(
            occurrence_id=occ, member_id=m0.id, site_id=scene.site_a.id, type="check_in",
            source=other.source, event_id=other.event_id, server_time=utcnow(), payload={}))
        conn.commit()  # the other process's batch commits, its locks go
    assert isinstance(waiting.exception(10), CheckedInElsewhere)


def test_a_patient_request_shares_its_commit_without_holding_up_a_hurried_one(app, scene):
    """A heartbeat may wait a quarter second for company (events.HEARTBEAT_LINGER); a
    check-in queued behind it is written after its own linger, and both in one batch."""
    writer = GroupWriter(app)
    patient = Request([_check_in(scene, scene.members[0], scene.site_a, "slow")], utcnow(),
                      linger=5.0)
    hurried = Request([_check_in(scene, scene.members[2], scene.site_b, "fast")], utcnow(),
                      linger=0.05)
    started = time.monotonic()
    writer.submit(patient)
    time.sleep(0.2)
    writer.submit(hurried)
    patient.future.result(10)
    hurried.future.result(10)
    waited = time.monotonic() - started
    assert waited < 2.0, f"the batch waited {waited:.2f} s, the patient request's 5 s"
    assert writer.stats["batches"] == 1
    assert len(_stored(scene)) == 2


def test_a_batch_takes_no_member_lock_while_it_waits_for_its_occurrence(app, scene):
    """PostgreSQL: a batch's locks are taken in one statement, the occurrence's (shared)
    before the members': while an occurrence is being locked (exclusive), a waiting batch
    holds no member lock that another process's batch could wait on (which would close a
    cycle: that batch holds the occurrence shared, the lock waits for it)."""
    import pytest

    from attendance.writer import MEMBER_CLASS

    if db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    occ, writer = scene.occurrence.id, writer_for(app)
    m0 = scene.members[0]
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:c, :o)"),
                     {"c": ADVISORY_CLASS, "o": occ})
        waiting = writer.submit(Request([_check_in(scene, m0, scene.site_a, "ordered")],
                                        utcnow()))
        time.sleep(0.3)
        assert not waiting.done()
        member_locks = conn.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::bigint = :c AND pid <> pg_backend_pid()"), {"c": MEMBER_CLASS})
        assert member_locks == 0
        conn.commit()
    [(event, created)] = waiting.result(10)
    assert created
    assert event.member_id == m0.id
