"""Calendar feeds: our feed expanded by recurring-ical-events gives exactly our occurrences."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar

from core.types import utcnow
from sessions import service
from sessions.models import Occurrence

BERLIN = ZoneInfo("Europe/Berlin")
SH = ZoneInfo("Asia/Shanghai")


def _feed_url(client, headers, path) -> str:
    r = client.get(f"/api/v1/{path}/calendar-url", headers=headers)
    assert r.status_code == 200, r.get_json()
    url = r.get_json()["url"]
    assert url.startswith("http://localhost/feeds/")
    assert url.endswith(".ics")
    return url.removeprefix("http://localhost")


def _expanded(body: bytes, a: dt.datetime, b: dt.datetime) -> list[tuple[dt.datetime, str]]:
    cal = Calendar.from_ical(body)
    out = []
    for event in recurring_ical_events.of(cal).between(a, b):
        if str(event.get("STATUS", "")).upper() == "CANCELLED":
            continue
        out.append((event["DTSTART"].dt.astimezone(dt.UTC), str(event["UID"])))
    return sorted(out)


def test_feed_round_trip(client, world, factory, make_session, db_session):
    now = utcnow()
    day = (now - dt.timedelta(days=21)).astimezone(BERLIN).date()
    # A weekly Berlin series crossing DST changes (open-ended), with an EXDATE, a move and a
    # cancel; a monthly Shanghai series edited after some instances were held; a one-off.
    weekly = make_session(
        title="周讲座", starts_at=dt.datetime.combine(day, dt.time(18, 0), BERLIN),
        timezone="Europe/Berlin", rrule="FREQ=WEEKLY", trainer_id=None, now=now,
        exdates=[dt.datetime.combine(day + dt.timedelta(days=35), dt.time(18, 0), BERLIN)])
    rows = weekly.occurrences
    service.update_occurrence(db_session, world.admin, rows[6],
                              starts_at=rows[6].starts_at + dt.timedelta(days=1, hours=2),
                              now=now)
    service.update_occurrence(db_session, world.admin, rows[8], status="cancelled", now=now)
    # At fixed hours of the day (UTC), so that no run of the test books site A twice: the
    # weekly series holds 16:00-18:30 UTC, its moved occurrence 19:00-20:30.
    monthly = make_session(
        title="党课", starts_at=dt.datetime.combine((now - dt.timedelta(days=70)).date(),
                                                   dt.time(2, 0), dt.UTC),
        rrule="FREQ=MONTHLY;COUNT=8",
        site_ids=[world.site_a.id], org_unit_ids=[], trainer_id=world.trainer.id, now=now,
        duration_minutes=60)
    # Later: one hour later from now on (the held ones stay at the old time: RDATE+override).
    service.update_session(db_session, world.admin, monthly,
                           {"starts_at": monthly.starts_at + dt.timedelta(hours=1),
                            "duration_minutes": 45}, now=now)
    make_session(title="一次性", trainer_id=None, rrule=None, now=now,
                 starts_at=dt.datetime.combine((now + dt.timedelta(days=3)).date(),
                                               dt.time(10, 0), dt.UTC))
    make_session(title="别的学习点", starts_at=now + dt.timedelta(days=3), trainer_id=None,
                 site_ids=[world.site_b.id], org_unit_ids=[], now=now)
    db_session.commit()

    url = _feed_url(client, factory.headers(world.admin), f"sites/{world.site_a.id}")
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/calendar; charset=utf-8"
    body = r.data
    text = body.decode()
    assert "METHOD:" not in text
    for needle in ("X-PUBLISHED-TTL:PT1H", "X-WR-CALNAME", "X-WR-TIMEZONE:Asia/Shanghai",
                   "REFRESH-INTERVAL;VALUE=DURATION:PT1H", "TZID:Europe/Berlin",
                   "TZID:Asia/Shanghai", "DTSTART;TZID=Europe/Berlin:", "RRULE:FREQ=WEEKLY",
                   "RECURRENCE-ID;TZID=Europe/Berlin:", "STATUS:CANCELLED", "EXDATE;TZID=",
                   "RDATE;TZID=Asia/Shanghai:"):
        assert needle in text, needle
    assert "别的学习点" not in text

    a, b = now - dt.timedelta(days=60), now + dt.timedelta(days=300)
    ours = sorted(
        (o.starts_at, o.session.uid)
        for o in db_session.query(Occurrence).all()
        if o.session.title != "别的学习点" and o.status != "cancelled"
        and o.ends_at > a and o.starts_at < b
    )
    assert _expanded(body, a, b) == ours
    # Local wall time is kept across DST in the feed, as in the database.
    weekly_starts = [s for s, uid in ours if uid == weekly.uid]
    assert {s.astimezone(BERLIN).strftime("%H:%M") for s in weekly_starts} >= {"18:00"}


def test_etag_304_and_change(client, world, factory, make_session, db_session):
    now = utcnow()
    study = make_session(starts_at=now + dt.timedelta(days=2), rrule="FREQ=WEEKLY;COUNT=3",
                         now=now)
    url = _feed_url(client, factory.headers(world.admin), f"sites/{world.site_a.id}")
    first = client.get(url)
    etag = first.headers["ETag"]
    assert etag
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    weak = client.get(url, headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304
    # Any change gives a new ETag and a new SEQUENCE.
    seq_before = study.sequence
    service.update_occurrence(db_session, world.admin, study.occurrences[1], status="cancelled",
                              now=utcnow())
    db_session.commit()
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert f"SEQUENCE:{seq_before + 1}" in changed.data.decode()
    assert "STATUS:CANCELLED" in changed.data.decode()


def test_revoked_token_is_gone(client, world, factory, make_session):
    make_session(starts_at=utcnow() + dt.timedelta(days=2))
    h = factory.headers(world.admin)
    old = _feed_url(client, h, f"sites/{world.site_a.id}")
    assert client.get(old).status_code == 200
    assert _feed_url(client, h, f"sites/{world.site_a.id}") == old  # stable until revoked
    r = client.post(f"/api/v1/sites/{world.site_a.id}/calendar-url/revoke", headers=h)
    new = r.get_json()["url"].removeprefix("http://localhost")
    assert new != old
    assert client.get(old).status_code == 404
    assert client.get(new).status_code == 200
    assert client.get("/feeds/forged.token.ics").status_code == 404
    assert client.get(old[:-10] + "AAAAAA.ics").status_code == 404


def test_member_trainer_and_org_unit_feeds(client, world, factory, make_session):
    now = utcnow()
    make_session(title="支部学习", starts_at=now + dt.timedelta(days=2), now=now)
    make_session(title="全委学习", starts_at=now + dt.timedelta(days=3), site_ids=[],
                 org_unit_ids=[world.committee.id], trainer_id=world.trainer2.id, now=now)
    member_h = factory.headers(world.member)
    text = client.get(_feed_url(client, member_h, f"members/{world.member_a.id}")).data.decode()
    assert "支部学习" in text
    assert "全委学习" in text
    text = client.get(_feed_url(client, factory.headers(world.trainer),
                                f"users/{world.trainer.id}")).data.decode()
    assert "支部学习" in text
    assert "全委学习" not in text
    text = client.get(_feed_url(client, factory.headers(world.organizer_b),
                                f"org-units/{world.branch_b.id}")).data.decode()
    assert "全委学习" in text
    assert "支部学习" not in text


def test_feed_url_access(client, world, factory):
    cases = [
        (world.member, f"members/{world.member_b.id}", 403),
        (world.member, f"members/{world.member_a.id}", 200),
        (world.operator, f"sites/{world.site_b.id}", 403),
        (world.operator, f"sites/{world.site_a.id}", 200),
        (world.organizer, f"org-units/{world.branch_b.id}", 403),
        (world.organizer, f"org-units/{world.branch_a.id}", 200),
        (world.trainer, f"users/{world.trainer2.id}", 403),
        (world.trainer, f"users/{world.trainer.id}", 200),
        (world.admin, f"users/{world.member.id}", 404),
        (world.admin, "sites/999999", 404),
    ]
    for user, path, status in cases:
        r = client.get(f"/api/v1/{path}/calendar-url", headers=factory.headers(user))
        assert r.status_code == status, (user.username, path, r.get_json())
    assert client.get(f"/api/v1/sites/{world.site_a.id}/calendar-url").status_code == 401


def test_session_ics(client, world, factory, make_session):
    study = make_session(rrule="FREQ=WEEKLY;COUNT=2")
    r = client.get(f"/api/v1/sessions/{study.id}/ics", headers=factory.headers(world.admin))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/calendar")
    cal = Calendar.from_ical(r.data)
    assert [str(e["UID"]) for e in cal.walk("VEVENT")] == [study.uid]
    r = client.get(f"/api/v1/sessions/{study.id}/ics",
                   headers=factory.headers(world.member_b_user))
    assert r.status_code == 403


def test_feed_urls_are_read_and_reset_only_by_owner_or_managers(client, world, factory):
    """Security (issue 10): no trainer reads or resets a site's feed; a member reads his
    site's and unit's shared calendars but resets neither."""
    def status(user, path, revoke=False):
        url = f"/api/v1/{path}/calendar-url" + ("/revoke" if revoke else "")
        call = client.post if revoke else client.get
        return call(url, headers=factory.headers(user)).status_code

    site_a, unit_a = f"sites/{world.site_a.id}", f"org-units/{world.branch_a.id}"
    assert status(world.trainer, site_a) == 403
    assert status(world.trainer, site_a, revoke=True) == 403
    assert status(world.member, site_a) == 200
    assert status(world.member, site_a, revoke=True) == 403
    assert status(world.member, unit_a) == 200
    assert status(world.member, unit_a, revoke=True) == 403
    assert status(world.member, f"members/{world.member_a.id}", revoke=True) == 200
    assert status(world.operator, site_a, revoke=True) == 200
    assert status(world.operator_b, site_a) == 403
    assert status(world.organizer, site_a, revoke=True) == 200
    assert status(world.organizer_b, site_a, revoke=True) == 403
    assert status(world.organizer, f"members/{world.member_a.id}", revoke=True) == 200
    assert status(world.organizer_b, f"members/{world.member_a.id}") == 403
    assert status(world.operator, f"members/{world.member_a.id}") == 403
