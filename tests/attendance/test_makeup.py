"""Make-up study: progress from watched ranges, tasks for absentees (attendance/makeup.py)."""

from __future__ import annotations

import datetime as dt

from attendance import service as svc
from attendance.models import MakeupTask
from config import settings
from core.types import utcnow
from tests.attendance.conftest import login


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
    assert svc.ensure_makeup_tasks(db_session, occ, config=settings(app), now=now) == []
    db_session.add(Recording(occurrence_id=occ.id, path="r.webm", status="complete",
                             duration_seconds=3600))
    db_session.flush()
    tasks = svc.ensure_makeup_tasks(db_session, occ, config=settings(app), now=now)
    assert sorted(t.member_id for t in tasks) == sorted(m.id for m in scene.members[1:])
    mine = svc.makeup_tasks_of_member(db_session, scene.members[1], config=settings(app), now=now)
    assert [t.occurrence_id for t in mine] == [occ.id]


def test_makeup_pages_for_members(client, scene):
    login(client, "m0")
    assert client.get("/makeup").status_code == 200
    assert client.get("/makeup/999").status_code == 404
