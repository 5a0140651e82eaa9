"""Import of .ics files: Outlook (Windows zone names), Google (X-WR-TIMEZONE), bad files."""

from __future__ import annotations

import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest

from sessions.models import Occurrence, StudySession

SH = ZoneInfo("Asia/Shanghai")

OUTLOOK = """BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
METHOD:PUBLISH
X-MS-OLK-FORCEINSPECTOROPEN:TRUE
BEGIN:VTIMEZONE
TZID:China Standard Time
BEGIN:STANDARD
DTSTART:16010101T000000
TZOFFSETFROM:+0800
TZOFFSETTO:+0800
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
CLASS:PUBLIC
CREATED:20260201T020000Z
DESCRIPTION:学习党史\\n第二讲
DTEND;TZID="China Standard Time":{y}0304T210000
DTSTAMP:20260201T020000Z
DTSTART;TZID="China Standard Time":{y}0304T193000
EXDATE;TZID="China Standard Time":{y}0318T193000
LOCATION:一号会议室
RRULE:FREQ=WEEKLY;COUNT=6;BYDAY=WE
SEQUENCE:0
SUMMARY;LANGUAGE=zh-cn:党史学习讲座
UID:040000008200E00074C5B7101A82E00800000000D0B5F0D4A0A1DC01000000000000000010000000
END:VEVENT
BEGIN:VEVENT
DTEND;TZID="China Standard Time":{y}0312T210000
DTSTAMP:20260201T020000Z
DTSTART;TZID="China Standard Time":{y}0312T193000
RECURRENCE-ID;TZID="China Standard Time":{y}0311T193000
SEQUENCE:1
SUMMARY;LANGUAGE=zh-cn:党史学习讲座（改到周四）
UID:040000008200E00074C5B7101A82E00800000000D0B5F0D4A0A1DC01000000000000000010000000
END:VEVENT
BEGIN:VEVENT
DTEND;TZID="China Standard Time":{y}0325T210000
DTSTAMP:20260201T020000Z
DTSTART;TZID="China Standard Time":{y}0325T193000
RECURRENCE-ID;TZID="China Standard Time":{y}0325T193000
STATUS:CANCELLED
SUMMARY:党史学习讲座
UID:040000008200E00074C5B7101A82E00800000000D0B5F0D4A0A1DC01000000000000000010000000
END:VEVENT
END:VCALENDAR
"""

GOOGLE = """BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:PUBLISH
X-WR-CALNAME:支部学习
X-WR-TIMEZONE:Asia/Shanghai
BEGIN:VEVENT
DTSTART:{y}0406T070000Z
DTEND:{y}0406T083000Z
DTSTAMP:20260301T000000Z
UID:abc123@google.com
SUMMARY:支部党员大会
STATUS:CONFIRMED
END:VEVENT
BEGIN:VEVENT
DTSTART;TZID=Asia/Shanghai:{y}0407T150000
DTEND;TZID=Asia/Shanghai:{y}0407T160000
RRULE:FREQ=MONTHLY;UNTIL={y}0630T155959Z;BYDAY=1TU
DTSTAMP:20260301T000000Z
UID:def456@google.com
SUMMARY:党小组会
END:VEVENT
BEGIN:VEVENT
DTSTART;VALUE=DATE:{y}0501
DTEND;VALUE=DATE:{y}0502
UID:holiday@google.com
SUMMARY:劳动节
END:VEVENT
END:VCALENDAR
"""

#: Wednesdays fall on 4, 11, 18, 25 March in 2026 (past imports are allowed).
YEAR = 2026


def _post(client, headers, world, content, **form):
    data = {"file": (io.BytesIO(content.encode() if isinstance(content, str) else content),
                     "cal.ics"),
            "site_ids": str(world.site_a.id), "org_unit_ids": str(world.branch_a.id)}
    data.update(form)
    return client.post("/api/v1/sessions/import", data=data, headers=headers,
                       content_type="multipart/form-data")


def test_outlook_file_with_windows_zone(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, OUTLOOK.replace("{y}", str(YEAR)),
              trainer_id=str(world.trainer.id))
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert len(body["ids"]) == 1
    study = db_session.get(StudySession, body["ids"][0])
    assert study.timezone == "Asia/Shanghai"
    assert study.title == "党史学习讲座"
    assert study.trainer_id == world.trainer.id
    assert study.duration_minutes == 90
    assert [s.id for s in study.sites] == [world.site_a.id]
    rows = study.occurrences
    local = [(o.starts_at.astimezone(SH).strftime("%m-%d %H:%M"), o.status) for o in rows]
    # 6 Wednesdays minus the EXDATE on 3/18; 3/11 moved to Thursday; 3/25 cancelled.
    assert sorted(local) == [("03-04 19:30", "scheduled"), ("03-12 19:30", "scheduled"),
                             ("03-25 19:30", "cancelled"), ("04-01 19:30", "scheduled"),
                             ("04-08 19:30", "scheduled")]
    moved = next(o for o in rows if o.starts_at != o.original_start)
    assert moved.original_start.astimezone(SH).strftime("%m-%d") == "03-11"


def test_google_file_with_x_wr_timezone(client, world, admin_h, db_session):
    r = _post(client, admin_h, world, GOOGLE.replace("{y}", str(YEAR)),
              site_ids=f"{world.site_a.id},{world.site_b.id}", org_unit_ids="")
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert len(body["ids"]) == 2
    assert any("劳动节" in n for n in body["notes"])  # the all-day event is skipped, said so
    meeting, group = (db_session.get(StudySession, i) for i in body["ids"])
    assert meeting.timezone == "Asia/Shanghai"
    assert meeting.occurrences[0].starts_at.astimezone(SH).strftime("%m-%d %H:%M") == "04-06 15:00"
    assert meeting.duration_minutes == 90
    assert {s.id for s in meeting.sites} == {world.site_a.id, world.site_b.id}
    assert [o.starts_at.astimezone(SH).strftime("%m-%d %H:%M") for o in group.occurrences] \
        == ["04-07 15:00", "05-05 15:00", "06-02 15:00"]


@pytest.mark.parametrize(("content", "fragment"), [
    ("hello world", "VCALENDAR"),
    ("BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n", "VEVENT"),
    (b"\xff\xfe\x00garbage", "UTF-8"),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nDTSTART:notadate\nEND:VEVENT\nEND:VCALENDAR\n",
     "x"),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:无开始\nEND:VEVENT\nEND:VCALENDAR\n", "DTSTART"),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:坏时区\nDTSTART;TZID=Nowhere/Land:20300101T100000\n"
     "END:VEVENT\nEND:VCALENDAR\n", "Nowhere/Land"),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:每小时\nDTSTART:20300101T100000Z\n"
     "RRULE:FREQ=HOURLY\nEND:VEVENT\nEND:VCALENDAR\n", "每小时"),
    ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:全天\nDTSTART;VALUE=DATE:20300101\n"
     "END:VEVENT\nEND:VCALENDAR\n", "全天"),
])
def test_bad_files_create_nothing(client, world, admin_h, db_session, content, fragment):
    # A good event before the bad one must not be created either (all or nothing).
    if isinstance(content, str) and "BEGIN:VEVENT" in content:
        content = content.replace(
            "BEGIN:VCALENDAR\n",
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:good\nSUMMARY:好\nDTSTART:20300105T020000Z\n"
            "DTEND:20300105T030000Z\nEND:VEVENT\n", 1) if "全天" not in content else content
    r = _post(client, admin_h, world, content)
    assert r.status_code in (400, 422), r.get_json()
    body = r.get_json()
    assert body["details"]["field"] == "file"
    assert fragment in body["message"], body["message"]
    assert db_session.query(StudySession).count() == 0
    assert db_session.query(Occurrence).count() == 0


def test_import_conflict_creates_nothing(client, world, admin_h, db_session, make_session):
    make_session(starts_at=dt.datetime(YEAR, 3, 4, 19, 0, tzinfo=SH), trainer_id=None,
                 rrule=None)
    r = _post(client, admin_h, world, OUTLOOK.replace("{y}", str(YEAR)))
    assert r.status_code == 409
    assert db_session.query(StudySession).count() == 1


def test_import_needs_rights_and_targets(client, world, factory, db_session):
    content = GOOGLE.replace("{y}", str(YEAR))
    r = _post(client, factory.headers(world.trainer), world, content)
    assert r.status_code == 403
    r = _post(client, factory.headers(world.organizer), world, content,
              site_ids=str(world.site_b.id))
    assert r.status_code == 403
    r = _post(client, factory.headers(world.admin), world, content, site_ids="", org_unit_ids="")
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "site_ids"
    r = _post(client, factory.headers(world.admin), world, content, site_ids="x")
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "site_ids"
    r = client.post("/api/v1/sessions/import", data={"site_ids": "1"},
                    headers=factory.headers(world.admin), content_type="multipart/form-data")
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "file"
    assert db_session.query(StudySession).count() == 0
