"""Security, limits (issue 10, finding 5): request size, .ics event count, recurrence rules
that yield nothing."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest

import config
from sessions.models import StudySession


def _event(n: int) -> str:
    return (f"BEGIN:VEVENT\r\nUID:e{n}\r\nSUMMARY:第{n}讲\r\n"
            f"DTSTART:20300101T{n % 24:02d}0000Z\r\nDTEND:20300101T{n % 24:02d}3000Z\r\n"
            "END:VEVENT\r\n")


def _calendar(events: int) -> bytes:
    body = "".join(_event(n) for n in range(events))
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n".encode()


def _import(client, headers, world, content: bytes):
    data = {"file": (io.BytesIO(content), "cal.ics"),
            "site_ids": str(world.site_a.id), "org_unit_ids": str(world.branch_a.id)}
    return client.post("/api/v1/sessions/import", data=data, headers=headers,
                       content_type="multipart/form-data")


def test_body_over_the_limit_is_413_before_anything(app, client, world, factory):
    assert app.config["MAX_CONTENT_LENGTH"] == 16 * 1024 * 1024  # the default
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    big = b"x" * 20_000
    # Before authentication: no login, and still 413 (not 401 after reading the body).
    for path in ("/api/v1/sessions", "/api/v1/auth/token", "/whip/1", "/login"):
        response = client.post(path, data=big, content_type="application/octet-stream")
        assert response.status_code == 413, path
    response = client.post("/api/v1/sessions", data=big, content_type="application/json")
    assert response.json["error"] == "payload_too_large"
    assert response.json["message"]
    # Under the limit, the usual answer.
    assert client.post("/api/v1/sessions", data=b"{}",
                       content_type="application/json").status_code in (401, 422)
    headers = factory.headers(world.admin)
    assert _import(client, headers, world, _calendar(200)).status_code == 413


def test_ics_with_too_many_events_is_422(app, client, world, factory, db_session):
    headers = factory.headers(world.admin)
    started = time.monotonic()
    response = _import(client, headers, world, _calendar(2001))
    assert response.status_code == 422
    assert response.json["error"] == "too_many_events"
    assert response.json["details"]["limit"] == 2000
    assert time.monotonic() - started < 2
    assert db_session.query(StudySession).count() == 0
    config.replace_settings(app, ics_max_events=3)
    assert _import(client, headers, world, _calendar(4)).status_code == 422
    assert _import(client, headers, world, _calendar(3)).status_code == 201


@pytest.mark.parametrize("rule", [
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31",
    "FREQ=DAILY;UNTIL=20310101T000000Z;BYMONTH=4;BYMONTHDAY=31",
    "FREQ=WEEKLY;BYMONTH=2;BYMONTHDAY=-30",
    "FREQ=DAILY;BYYEARDAY=366;BYMONTH=2",
    "FREQ=MONTHLY;INTERVAL=7;BYSETPOS=6;BYDAY=MO",
])
def test_rule_that_yields_nothing_is_refused_cheaply(client, world, factory, rule):
    headers = factory.headers(world.admin)
    body = {"title": "讲座", "kind": "party_lesson", "duration_minutes": 60,
            "starts_at": "2030-03-04T19:30:00+08:00", "timezone": "Asia/Shanghai",
            "site_ids": [world.site_a.id], "org_unit_ids": [world.branch_a.id], "rrule": rule}
    started = time.process_time()
    response = client.post("/api/v1/sessions", json=body, headers=headers)
    spent = time.process_time() - started
    assert response.status_code == 422, response.json
    assert response.json["details"]["field"] == "rrule"
    assert spent < 1.5, f"{rule}: {spent:.2f} s of CPU"


@pytest.mark.parametrize(("rule", "first"), [
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", "2044-02-29"),  # every 28 years or so
    ("FREQ=YEARLY;INTERVAL=3;BYMONTH=2;BYMONTHDAY=29", "2036-02-29"),  # phase kept
    ("FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4,5", "2030-05-31"),
    ("FREQ=WEEKLY;INTERVAL=5;BYDAY=SU", "2030-03-10"),
])
def test_rare_but_real_rules_still_work(rule, first):
    from zoneinfo import ZoneInfo

    from sessions.recurrence import first_start

    tz = ZoneInfo("Asia/Shanghai")
    start = dt.datetime(2030, 3, 4, 11, 30, tzinfo=dt.UTC)
    assert first_start(rule, start, tz).astimezone(tz).date().isoformat() == first


@pytest.mark.parametrize("stamp", ["00010101T090000Z", "99991231T230000Z",
                                   "00010101T090000", "99991231T235959"])
def test_ics_with_dates_in_year_1_or_9999_is_422(client, world, factory, stamp):
    headers = factory.headers(world.admin)
    content = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\nSUMMARY:讲座\r\n"
               f"DTSTART:{stamp}\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    response = _import(client, headers, world, content)
    assert response.status_code == 422, response.json


def test_imports_are_rate_limited_per_user(app, client, world, factory):
    app.config["YUANJIAO_IMPORTS_PER_MINUTE"] = 2
    headers = factory.headers(world.admin)

    def one(day: int) -> bytes:  # a lecture on another day each time: no clash
        return _calendar(1).replace(b"20300101", f"203001{day:02d}".encode())

    assert _import(client, headers, world, one(1)).status_code == 201
    assert _import(client, headers, world, one(2)).status_code == 201
    limited = _import(client, headers, world, one(3))
    assert limited.status_code == 429
    assert limited.json["error"] == "too_many_requests"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # Another user is not limited by the first one's imports.
    other = factory.headers(world.organizer)
    assert _import(client, other, world, one(4)).status_code == 201
