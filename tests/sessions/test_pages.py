"""Pages: dashboard, session list, form (server-side validation), detail, calendar, feeds."""

from __future__ import annotations

import datetime as dt

import pytest

from core.types import utcnow
from sessions.models import StudySession


def _login(client, user):
    with client.session_transaction() as sess:
        sess["_user_id"] = user.get_id()
        sess["_fresh"] = True


@pytest.fixture
def upcoming(make_session, world):
    now = utcnow()
    return make_session(title="今日党课", starts_at=now + dt.timedelta(hours=1),
                        rrule="FREQ=DAILY;COUNT=3", now=now)


def test_dashboard_per_role(client, world, upcoming):
    occ = upcoming.occurrences[0]
    expectations = {
        world.admin: [f"/live/{occ.id}/broadcast", f"/attendance/{occ.id}"],
        world.trainer: [f"/live/{occ.id}/broadcast"],
        world.operator: [f"/live/{occ.id}/site/{world.site_a.id}", f"/attendance/{occ.id}"],
        world.organizer: [f"/attendance/{occ.id}", f"/live/{occ.id}/site/{world.site_a.id}"],
        world.member: [f"/live/{occ.id}/watch"],
    }
    for user, links in expectations.items():
        _login(client, user)
        r = client.get("/")
        assert r.status_code == 200
        html = r.get_data(as_text=True)
        assert "今日党课" in html, user.username
        for link in links:
            assert link in html, (user.username, link)
    for user in (world.operator_b, world.member_b_user, world.organizer_b, world.trainer2):
        _login(client, user)
        assert "今日党课" not in client.get("/").get_data(as_text=True), user.username


def test_login_required(client):
    for path in ("/", "/sessions", "/sessions/new", "/calendar", "/feeds"):
        r = client.get(path)
        assert r.status_code == 302
        assert "/login" in r.headers["Location"]


def test_form_creates_and_edits(client, world, db_session):
    _login(client, world.organizer)
    r = client.get("/sessions/new")
    assert r.status_code == 200
    assert 'name="repeat"' in r.get_data(as_text=True)
    day = (utcnow() + dt.timedelta(days=10)).date()
    form = {
        "title": "每周党史讲座", "kind": "party_history_lecture",
        "trainer_id": str(world.trainer.id),
        "start_date": day.isoformat(), "start_time": "19:30", "timezone": "Asia/Shanghai",
        "duration_minutes": "90", "repeat": "weekly", "interval": "1",
        "weekdays": ["WE", "FR"], "end": "count", "count": "4",
        "site_ids": [str(world.site_a.id)], "org_unit_ids": [str(world.branch_a.id)],
        "late_after_minutes": "10", "present_threshold_percent": "80",
        "video_bitrate_kbps": "1200", "video_height": "480",
    }
    r = client.post("/sessions/new", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)
    study = db_session.query(StudySession).one()
    assert study.rrule == "FREQ=WEEKLY;BYDAY=WE,FR;COUNT=4"
    assert len(study.occurrences) == 4
    detail = client.get(f"/sessions/{study.id}").get_data(as_text=True)
    assert "每周党史讲座" in detail
    assert "move-input" in detail
    edit = client.get(f"/sessions/{study.id}/edit").get_data(as_text=True)
    assert 'value="WE" checked' in edit
    # Server-side validation shows errors inline and saves nothing.
    bad = dict(form, weekdays=[], title="改")
    r = client.post(f"/sessions/{study.id}/edit", data=bad)
    assert r.status_code == 422
    assert 'data-field="weekdays"' in r.get_data(as_text=True)
    bad = dict(form, site_ids=[str(world.site_b.id)])
    r = client.post(f"/sessions/{study.id}/edit", data=bad)
    assert r.status_code == 403
    bad = dict(form, repeat="custom", custom_rrule="FREQ=HOURLY")
    r = client.post(f"/sessions/{study.id}/edit", data=bad)
    assert r.status_code == 422
    assert "HOURLY" in r.get_data(as_text=True)
    r = client.post(f"/sessions/{study.id}/edit", data=dict(form, repeat="monthly_nth", nth="-1",
                                                            nth_weekday="FR", end="never"))
    assert r.status_code == 302
    db_session.expire_all()
    assert db_session.get(StudySession, study.id).rrule == "FREQ=MONTHLY;BYDAY=-1FR"
    # A clash is shown on the form, not saved.
    first = db_session.get(StudySession, study.id).occurrences[0].starts_at
    local = first.astimezone(dt.timezone(dt.timedelta(hours=8)))
    other = dict(form, title="冲突", start_date=local.date().isoformat(), repeat="none",
                 start_time=(local + dt.timedelta(minutes=15)).strftime("%H:%M"), trainer_id="")
    r = client.post("/sessions/new", data=other)
    assert r.status_code == 409
    assert "时间冲突" in r.get_data(as_text=True)


def test_form_denied_to_other_roles(client, world):
    for user in (world.trainer, world.operator, world.member):
        _login(client, user)
        assert client.get("/sessions/new").status_code == 403


def test_calendar_week_and_month(client, world, upcoming):
    _login(client, world.member)
    r = client.get("/calendar")
    assert r.status_code == 200
    assert "今日党课" in r.get_data(as_text=True)
    day = upcoming.occurrences[0].starts_at.date()
    r = client.get(f"/calendar?view=month&date={day.isoformat()}")
    html = r.get_data(as_text=True)
    assert "今日党课" in html
    assert 'id="cal-next"' in html
    r = client.get("/calendar?view=week&date=2001-01-01")
    assert "今日党课" not in r.get_data(as_text=True)
    assert client.get("/calendar?date=garbage").status_code == 200


def test_feeds_page_lists_own_calendars(client, world):
    _login(client, world.member)
    html = client.get("/feeds").get_data(as_text=True)
    assert "/feeds/" in html
    assert "data-copy" in html
    assert "一号会议室" in html
    _login(client, world.admin)
    html = client.get("/feeds").get_data(as_text=True)
    assert "二号会议室" in html


def test_session_list_and_ics(client, world, upcoming):
    _login(client, world.organizer)
    assert "今日党课" in client.get("/sessions").get_data(as_text=True)
    r = client.get(f"/sessions/{upcoming.id}.ics")
    assert r.status_code == 200
    assert b"BEGIN:VCALENDAR" in r.data
    _login(client, world.organizer_b)
    assert "今日党课" not in client.get("/sessions").get_data(as_text=True)
    assert client.get(f"/sessions/{upcoming.id}").status_code == 403
