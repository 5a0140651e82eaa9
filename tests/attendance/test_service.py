"""Service rules without HTTP: QR tokens, make-up progress, reports, ledger, idempotency."""

from __future__ import annotations

import datetime as dt

import pytest

from attendance import service as svc
from attendance.errors import QrRefused
from attendance.models import AttendanceEvent, MakeupTask
from core.types import utcnow

SECRET = "test-secret"


def test_qr_token_valid_for_its_slot_and_the_next_only(scene):
    now = utcnow()
    token, expires = svc.make_qr_token(SECRET, scene.occurrence.id, scene.site_a.id, now, 25)
    assert expires > now
    assert svc.read_qr_token(SECRET, token, now, 25) == (scene.occurrence.id, scene.site_a.id)
    assert svc.read_qr_token(SECRET, token, now + dt.timedelta(seconds=25), 25)
    with pytest.raises(QrRefused) as err:
        svc.read_qr_token(SECRET, token, now + dt.timedelta(seconds=51), 25)
    assert err.value.code == "qr_expired"
    with pytest.raises(QrRefused) as err:
        svc.read_qr_token("another-secret", token, now, 25)
    assert err.value.code == "qr_invalid"


def test_a_concurrent_duplicate_returns_the_stored_event(db_session, scene):
    now = utcnow()
    kw = {"occurrence": scene.occurrence, "type": "check_in", "source": "site:1",
          "event_id": "dup", "now": now, "member_id": scene.members[0].id,
          "site_id": scene.site_a.id}
    first, created = svc.record_event(db_session, **kw)
    assert created
    db_session.commit()
    # simulate the race: the lookup missed, the insert hits the unique constraint
    clash = AttendanceEvent(occurrence_id=scene.occurrence.id, source="site:1", event_id="dup",
                            type="check_in", member_id=scene.members[0].id, server_time=now,
                            payload={})
    stored, created = svc._insert(db_session, clash)
    assert (stored.id, created) == (first.id, False)


def test_makeup_progress_merges_ranges_and_caps_by_wall_time(db_session, scene):
    task = MakeupTask(occurrence_id=scene.occurrence.id, member_id=scene.members[0].id,
                      watched_ranges=[], updated_at=utcnow())
    db_session.add(task)
    db_session.flush()
    t0 = utcnow()
    svc.makeup_progress(db_session, task=task, ranges=[[0, 30]], duration=100, share=0.9,
                        now=t0)
    assert task.seconds_watched == 30
    # replaying 0–30 and seeking ahead to 60–70 after 20 s: only the new 10 s count
    svc.makeup_progress(db_session, task=task, ranges=[[0, 30], [60, 70]], duration=100,
                        share=0.9, now=t0 + dt.timedelta(seconds=20))
    assert task.watched_ranges == [[0, 30], [60, 70]]
    assert task.seconds_watched == 40
    # claiming the whole hour at once is capped by the time since the last heartbeat
    svc.makeup_progress(db_session, task=task, ranges=[[0, 100]], duration=100, share=0.9,
                        now=t0 + dt.timedelta(seconds=30))
    assert task.seconds_watched == 40 + 25
    assert task.completed_at is None
    svc.makeup_progress(db_session, task=task, ranges=[[0, 100]], duration=100, share=0.9,
                        now=t0 + dt.timedelta(seconds=80))
    assert task.seconds_watched == 100
    assert task.completed_at is not None


def test_absentees_get_makeup_tasks_when_a_recording_exists(db_session, scene, app):
    from video.models import Recording

    occ = scene.occurrence
    now = occ.ends_at + dt.timedelta(minutes=1)
    svc.record_event(db_session, occurrence=occ, type="check_in", source="t", event_id="1",
                     now=occ.starts_at, member_id=scene.members[0].id, site_id=scene.site_a.id)
    assert svc.ensure_makeup_tasks(db_session, occ, config=app.config, now=now) == []
    db_session.add(Recording(occurrence_id=occ.id, path="r.webm", status="complete",
                             duration_seconds=3600))
    db_session.flush()
    tasks = svc.ensure_makeup_tasks(db_session, occ, config=app.config, now=now)
    assert sorted(t.member_id for t in tasks) == sorted(m.id for m in scene.members[1:])
    mine = svc.makeup_tasks_of_member(db_session, scene.members[1], config=app.config, now=now)
    assert [t.occurrence_id for t in mine] == [occ.id]


def test_report_and_ledger(db_session, scene, app):
    occ = scene.occurrence
    now = occ.ends_at + dt.timedelta(minutes=1)
    svc.record_event(db_session, occurrence=occ, type="check_in", source="t", event_id="1",
                     now=occ.starts_at, member_id=scene.members[0].id, site_id=scene.site_a.id)
    data = svc.report(db_session, unit_id=scene.unit.id, unit_ids=None,
                      start=occ.starts_at - dt.timedelta(days=1),
                      end=occ.starts_at + dt.timedelta(days=1), config=app.config, now=now)
    per_member = {r["member"].id: r for r in data["members"]}
    assert per_member[scene.members[0].id]["rate"] == 1.0
    assert per_member[scene.members[1].id]["rate"] == 0.0
    assert data["branches"][0]["rate"] == 0.25
    ledger = svc.ledger(db_session, year=occ.starts_at.year, unit_ids=[scene.unit.id],
                        config=app.config, now=now, tz="UTC")
    hours = {r["member"].id: r for r in ledger["rows"]}
    assert hours[scene.members[0].id]["live_hours"] == 1.0
    assert hours[scene.members[0].id]["short"] is True
    assert ledger["required"] == 32
    assert ledger["short_count"] == 4
