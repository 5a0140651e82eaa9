"""Imports of files as Outlook and Google write them: a file's own time zone, UTC rules,
the file's exceptions before the conflict check, and importing the same file again."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from sessions.models import Occurrence, StudySession
from tests.sessions.test_import import OUTLOOK, YEAR, _post

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")

#: Outlook 16 exporting from a machine set to a zone it has no Windows name for: the
#: VTIMEZONE is its own ("Customized Time Zone"), here +08:00 without DST.
OUTLOOK_CUSTOM = """BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
METHOD:PUBLISH
X-MS-OLK-FORCEINSPECTOROPEN:TRUE
BEGIN:VTIMEZONE
TZID:Customized Time Zone
BEGIN:STANDARD
DTSTART:16010101T000000
TZOFFSETFROM:+0800
TZOFFSETTO:+0800
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T000000
TZOFFSETFROM:+0800
TZOFFSETTO:+0800
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
CLASS:PUBLIC
CREATED:20261101T020000Z
DTEND;TZID="Customized Time Zone":20270106T210000
DTSTAMP:20261101T020000Z
DTSTART;TZID="Customized Time Zone":20270106T193000
EXDATE;TZID="Customized Time Zone":20270120T193000
RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=WE
SEQUENCE:0
SUMMARY;LANGUAGE=zh-cn:党课（自定义时区）
UID:040000008200E00074C5B7101A82E0080000000010C0FFEE00000000000000001000000011
X-MICROSOFT-CDO-BUSYSTATUS:BUSY
END:VEVENT
END:VCALENDAR
"""

#: The same, from a machine whose zone has European summer time under a custom name.
OUTLOOK_CUSTOM_DST = """BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
METHOD:PUBLISH
BEGIN:VTIMEZONE
TZID:Customized Time Zone 1
BEGIN:STANDARD
DTSTART:16011028T030000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010325T020000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
DTEND;TZID="Customized Time Zone 1":20270317T190000
DTSTAMP:20261101T020000Z
DTSTART;TZID="Customized Time Zone 1":20270317T180000
RRULE:FREQ=WEEKLY;COUNT=3
SUMMARY:Study group
UID:custom-dst@example.org
END:VEVENT
END:VCALENDAR
"""

#: Google Calendar, an event created in UTC: Mondays 17:00 UTC, Tuesdays 01:00 in Shanghai.
GOOGLE_UTC = """BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:PUBLISH
X-WR-CALNAME:Evening lectures
X-WR-TIMEZONE:Asia/Shanghai
BEGIN:VEVENT
DTSTART:20270104T170000Z
DTEND:20270104T180000Z
RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=MO
DTSTAMP:20261101T000000Z
UID:0rnf2bq1h1p3v9lq0s9e4d6t8c@google.com
CREATED:20261101T000000Z
SUMMARY:线上党课
STATUS:CONFIRMED
SEQUENCE:0
TRANSP:OPAQUE
END:VEVENT
END:VCALENDAR
"""


def _rows(study):
    return sorted(study.occurrences, key=lambda o: o.original_start)


def test_outlook_customized_time_zone(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, OUTLOOK_CUSTOM)
    assert r.status_code == 201, r.get_json()
    study = db_session.get(StudySession, r.get_json()["ids"][0])
    assert study.timezone == "Asia/Shanghai"  # the zone it matches, the calendar's default
    local = [o.starts_at.astimezone(SH).strftime("%Y-%m-%d %a %H:%M") for o in _rows(study)]
    assert local == ["2027-01-06 Wed 19:30", "2027-01-13 Wed 19:30", "2027-01-27 Wed 19:30"]
    assert study.duration_minutes == 90


def test_outlook_customized_zone_with_summer_time(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, OUTLOOK_CUSTOM_DST)
    assert r.status_code == 201, r.get_json()
    study = db_session.get(StudySession, r.get_json()["ids"][0])
    zone = ZoneInfo(study.timezone)
    # The file's wall time stays 18:00 across the change on 28 March 2027, as in Berlin.
    assert [o.starts_at.astimezone(zone).strftime("%m-%d %H:%M") for o in _rows(study)] \
        == ["03-17 18:00", "03-24 18:00", "03-31 18:00"]
    assert [o.starts_at.astimezone(BERLIN).strftime("%H:%M") for o in _rows(study)] \
        == ["18:00", "18:00", "18:00"]


def test_a_zone_no_known_zone_matches_is_refused(client, world, admin_h, db_session):
    odd = OUTLOOK_CUSTOM.replace("+0800", "+0317")
    r = _post(client, admin_h, world, odd)
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "file"
    assert "Customized Time Zone" in r.get_json()["message"]
    assert db_session.query(StudySession).count() == 0


def test_a_utc_rule_keeps_its_utc_weekday(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, GOOGLE_UTC)
    assert r.status_code == 201, r.get_json()
    study = db_session.get(StudySession, r.get_json()["ids"][0])
    starts = [o.starts_at for o in _rows(study)]
    assert [s.astimezone(dt.UTC).strftime("%a %H:%M") for s in starts] == ["Mon 17:00"] * 4
    assert [s.date().isoformat() for s in starts] == [
        "2027-01-04", "2027-01-11", "2027-01-18", "2027-01-25"]
    assert study.timezone == "UTC"


@pytest.mark.parametrize("how", ["exdate", "moved", "cancelled"])
def test_the_files_own_exceptions_come_before_the_conflict_check(
        client, world, admin_h, db_session, make_session, how):
    # Something else is booked at the site on the series' third Wednesday (18 March).
    make_session(title="已有安排", starts_at=dt.datetime(YEAR, 3, 18, 19, 0, tzinfo=SH),
                 trainer_id=None, rrule=None, org_unit_ids=[])
    y = str(YEAR)
    content = OUTLOOK.replace("{y}", y).replace(
        f'EXDATE;TZID="China Standard Time":{y}0318T193000\n', "")
    if how == "exdate":
        content = content.replace("RRULE:", f'EXDATE;TZID="China Standard Time":{y}0318T193000'
                                  "\nRRULE:")
    else:
        extra = (f'BEGIN:VEVENT\nDTSTART;TZID="China Standard Time":{y}0319T193000\n'
                 f'DTEND;TZID="China Standard Time":{y}0319T210000\n'
                 f'RECURRENCE-ID;TZID="China Standard Time":{y}0318T193000\n'
                 + ("STATUS:CANCELLED\n" if how == "cancelled" else "")
                 + "SUMMARY:党史学习讲座\nUID:040000008200E00074C5B7101A82E00800000000D0B5F0D4A0"
                 "A1DC01000000000000000010000000\nEND:VEVENT\nEND:VCALENDAR")
        content = content.replace("END:VCALENDAR", extra)
    r = _post(client, admin_h, world, content)
    assert r.status_code == 201, r.get_json()
    study = db_session.get(StudySession, r.get_json()["ids"][0])
    march18 = [o for o in study.occurrences
               if o.original_start.astimezone(SH).date() == dt.date(YEAR, 3, 18)]
    if how == "exdate":
        assert march18 == []
    elif how == "moved":
        assert march18[0].starts_at.astimezone(SH).strftime("%m-%d %H:%M") == "03-19 19:30"
    else:
        assert march18[0].status == "cancelled"
    # Without the file's exception, the same series clashes.
    plain = OUTLOOK.replace("{y}", y).replace(
        f'EXDATE;TZID="China Standard Time":{y}0318T193000\n', "").replace(
        "UID:040000008200E00074C5B7101A82E008", "UID:other-series-")
    assert _post(client, admin_h, world, plain).status_code == 409


def test_importing_the_same_file_again_updates_by_uid(client, world, admin_h, db_session):
    content = OUTLOOK.replace("{y}", str(YEAR))
    first = _post(client, admin_h, world, content, trainer_id=str(world.trainer.id))
    assert first.status_code == 201, first.get_json()
    assert [c["action"] for c in first.get_json()["changes"]] == ["created"]
    study_id = first.get_json()["ids"][0]
    rows_before = {(o.id, o.starts_at, o.status) for o in db_session.query(Occurrence)}

    again = _post(client, admin_h, world, content)
    assert again.status_code == 201, again.get_json()
    body = again.get_json()
    assert body["ids"] == [study_id]
    assert [c["action"] for c in body["changes"]] == ["unchanged"]
    db_session.expire_all()
    assert db_session.query(StudySession).count() == 1
    assert {(o.id, o.starts_at, o.status) for o in db_session.query(Occurrence)} == rows_before
    assert db_session.get(StudySession, study_id).trainer_id == world.trainer.id


def test_an_edited_file_updates_its_sessions_and_a_dry_run_says_how(
        client, world, admin_h, db_session):
    first = _post(client, admin_h, world, GOOGLE_UTC)
    assert first.status_code == 201, first.get_json()
    study_id = first.get_json()["ids"][0]
    kept = {o.original_start: o.id for o in db_session.query(Occurrence)}
    # Edited in Google: a new title and two more weeks.
    edited = GOOGLE_UTC.replace("COUNT=4", "COUNT=6").replace("SUMMARY:线上党课",
                                                              "SUMMARY:线上党课（第二期）")
    dry = _post(client, admin_h, world, edited, dry_run="true")
    assert dry.status_code == 200, dry.get_json()
    assert dry.get_json()["dry_run"] is True
    assert dry.get_json()["changes"] == [{
        "uid": "0rnf2bq1h1p3v9lq0s9e4d6t8c@google.com", "title": "线上党课（第二期）",
        "action": "updated", "session_id": study_id, "occurrences": 6}]
    db_session.expire_all()
    assert db_session.get(StudySession, study_id).title == "线上党课"
    assert db_session.query(Occurrence).count() == 4

    updated = _post(client, admin_h, world, edited)
    assert updated.status_code == 201, updated.get_json()
    assert [c["action"] for c in updated.get_json()["changes"]] == ["updated"]
    db_session.expire_all()
    assert db_session.query(StudySession).count() == 1
    study = db_session.get(StudySession, study_id)
    assert study.title == "线上党课（第二期）"
    assert [o.starts_at.date().isoformat() for o in _rows(study)] == [
        "2027-01-04", "2027-01-11", "2027-01-18", "2027-01-25", "2027-02-01", "2027-02-08"]
    # The first four keep their ids (links and stream keys to them stay valid).
    assert {o.original_start: o.id for o in study.occurrences if o.original_start in kept} \
        == kept


def test_a_dry_run_of_a_new_file_saves_nothing(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, GOOGLE_UTC, dry_run="true")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["changes"] == [{
        "uid": "0rnf2bq1h1p3v9lq0s9e4d6t8c@google.com", "title": "线上党课",
        "action": "created", "session_id": None, "occurrences": 4}]
    assert db_session.query(StudySession).count() == 0


def test_an_override_keeps_its_own_title_in_the_feed(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, OUTLOOK.replace("{y}", str(YEAR)))
    assert r.status_code == 201, r.get_json()
    study = db_session.get(StudySession, r.get_json()["ids"][0])
    moved = next(o for o in study.occurrences if o.starts_at != o.original_start)
    assert moved.title == "党史学习讲座（改到周四）"
    assert moved.description == study.description  # the override has none of its own
    cancelled = next(o for o in study.occurrences if o.status == "cancelled")
    assert cancelled.title_override is None  # same SUMMARY as the series
    url = client.get(f"/api/v1/sites/{world.site_a.id}/calendar-url",
                     headers=admin_h).get_json()["url"].removeprefix("http://localhost")
    from icalendar import Calendar

    events = Calendar.from_ical(client.get(url).data).walk("VEVENT")
    overrides = {e["RECURRENCE-ID"].dt.astimezone(SH).strftime("%m-%d"): e for e in events
                 if e.get("RECURRENCE-ID") is not None}
    assert str(overrides["03-11"]["SUMMARY"]) == "党史学习讲座（改到周四）"
    assert str(overrides["03-25"]["SUMMARY"]) == "党史学习讲座"
    # Importing it again changes nothing.
    again = _post(client, admin_h, world, OUTLOOK.replace("{y}", str(YEAR)))
    assert [c["action"] for c in again.get_json()["changes"]] == ["unchanged"]


def test_another_audience_importing_the_same_file_gets_its_own_sessions(
        client, world, factory, admin_h, db_session):
    content = GOOGLE_UTC
    first = _post(client, admin_h, world, content)
    assert first.status_code == 201, first.get_json()
    # Branch B's organizer imports the same shared calendar for branch B's room.
    other = _post(client, factory.headers(world.organizer_b), world, content,
                  site_ids=str(world.site_b.id), org_unit_ids=str(world.branch_b.id))
    assert other.status_code == 201, other.get_json()
    assert [c["action"] for c in other.get_json()["changes"]] == ["created"]
    assert other.get_json()["ids"] != first.get_json()["ids"]
    db_session.expire_all()
    mine = db_session.get(StudySession, first.get_json()["ids"][0])
    assert [s.id for s in mine.sites] == [world.site_a.id]
    assert db_session.query(StudySession).count() == 2
