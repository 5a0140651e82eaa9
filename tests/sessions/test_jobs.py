"""Horizons are extended by a job (start-up, daily, `flask extend-horizons`), never by a
GET: reading pages, the API, feeds and the room screen writes nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from accounts.service import issue_site_token
from core.types import utcnow
from sessions import service
from sessions.jobs import extend_all_horizons
from sessions.models import Occurrence, StudySession
from tests.sessions.test_pages import _login


def _stale_series(make_session, world, db_session) -> tuple[int, dt.datetime]:
    """An open-ended weekly series whose horizon fell behind (materialized a year ago)."""
    a_year_ago = utcnow() - dt.timedelta(days=365)
    study = make_session(rrule="FREQ=WEEKLY;BYDAY=WE", now=a_year_ago,
                         starts_at=a_year_ago + dt.timedelta(days=1))
    db_session.commit()
    return study.id, study.materialized_until


def _state(db_session, sid):
    db_session.expire_all()
    return (db_session.get(StudySession, sid).materialized_until,
            db_session.scalar(select(func.count()).select_from(Occurrence)
                              .where(Occurrence.session_id == sid)))


def test_reads_do_not_extend_and_the_job_does(app, client, make_session, world, db_session,
                                              runner):
    sid, until = _stale_series(make_session, world, db_session)
    before = _state(db_session, sid)
    assert before[0] == until
    feed = service.feed_token(db_session, "site", world.site_a.id, secret=app.secret_key)
    screen = issue_site_token(db_session, world.site_a)
    db_session.commit()
    api = {"Authorization": f"Bearer {screen}"}
    assert client.get(f"/api/v1/sessions/{sid}/occurrences", headers=api).status_code == 200
    assert client.get("/api/v1/occurrences", headers=api).status_code == 200
    assert client.get(f"/feeds/{feed}.ics").status_code == 200
    assert client.get(f"/screen/{world.site_a.id}?token={screen}").status_code in (200, 302)
    _login(client, world.admin)
    for page in ("/", f"/sessions/{sid}", "/calendar"):
        assert client.get(page).status_code == 200, page
    assert _state(db_session, sid) == before

    result = runner.invoke(args=["extend-horizons"])
    assert result.exit_code == 0, result.output
    after = _state(db_session, sid)
    assert after[0] > until + dt.timedelta(days=300)
    assert after[1] > before[1]
    assert f"{after[1] - before[1]} occurrences created" in result.output
    # Nothing left to do: a second run creates nothing.
    assert extend_all_horizons(app) == 0


def test_a_serving_process_extends_at_start(app, make_session, world, db_session):
    """`start_jobs` (python app.py, each gunicorn worker) runs the job at once, then daily."""
    import time

    from app import start_jobs

    sid, until = _stale_series(make_session, world, db_session)
    start_jobs(app)
    deadline = time.monotonic() + 20
    while _state(db_session, sid)[0] == until and time.monotonic() < deadline:
        db_session.rollback()
        time.sleep(0.1)
    assert _state(db_session, sid)[0] > until + dt.timedelta(days=300)
