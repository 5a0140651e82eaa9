"""The standing room-screen address: /screen/<site_id> opens the lecture that runs now."""

from __future__ import annotations

import datetime as dt

import pytest

from accounts.service import issue_site_token
from core.principals import SYSTEM
from core.types import utcnow
from sessions.service import create_session


@pytest.fixture
def room(factory, db_session):
    branch = factory.org_unit("第一支部")
    site = factory.site(branch, "一工区会议室")
    other = factory.site(branch, "二工区会议室")
    trainer = factory.user("trainer", username="lecturer")
    token = issue_site_token(db_session, site)
    db_session.commit()
    return {"branch": branch, "site": site, "other": other, "trainer": trainer,
            "token": token}


def schedule(db_session, room, starts_at: dt.datetime, title: str):
    study = create_session(db_session, SYSTEM, {
        "title": title, "kind": "party_history_lecture", "trainer_id": room["trainer"].id,
        "starts_at": starts_at, "duration_minutes": 60, "timezone": "Asia/Shanghai",
        "site_ids": [room["site"].id], "org_unit_ids": [room["branch"].id]}, now=utcnow())
    db_session.commit()
    return study


def test_idle_screen_without_lectures(client, room):
    r = client.get(f"/screen/{room['site'].id}?token={room['token']}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert 'data-state="waiting"' in page
    assert "暂无安排的学习" in page


def test_idle_screen_names_the_next_lecture(client, db_session, room):
    schedule(db_session, room, utcnow() + dt.timedelta(days=2), "下周党史课")
    r = client.get(f"/screen/{room['site'].id}?token={room['token']}")
    assert r.status_code == 200
    assert "下周党史课" in r.get_data(as_text=True)


def test_screen_opens_the_lecture_that_runs_now(client, db_session, room):
    study = schedule(db_session, room, utcnow() + dt.timedelta(minutes=10), "正在进行")
    occurrence_id = study.occurrences[0].id
    r = client.get(f"/screen/{room['site'].id}?token={room['token']}")
    assert r.status_code == 302
    assert r.headers["Location"] == (
        f"/live/{occurrence_id}/site/{room['site'].id}?token={room['token']}")


def test_screen_token_of_another_site_is_refused(client, room):
    r = client.get(f"/screen/{room['other'].id}?token={room['token']}")
    assert r.status_code == 403


def test_screen_without_token_or_login_asks_for_login(client, room):
    r = client.get(f"/screen/{room['site'].id}")
    assert r.status_code == 302
    assert "/login" in r.headers["Location"]
