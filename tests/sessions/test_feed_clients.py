"""Feeds as other calendar programs read them: Outlook's properties, HTTP validators, and
two independent parsers (vobject, and libical through GObject introspection)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from werkzeug.http import http_date, parse_date

from core.types import utcnow
from sessions import service
from sessions.models import Occurrence
from tests.sessions.test_feeds import _feed_url

BERLIN = ZoneInfo("Europe/Berlin")
LIBICAL_READ = Path(__file__).with_name("libical_read.py")


def _gi_python() -> str | None:
    """A Python with libical's introspection data (CI: Debian's python3-gi, gir1.2-ical-3.0)."""
    check = "import gi; gi.require_version('ICalGLib', '3.0'); from gi.repository import ICalGLib"
    for python in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", check], capture_output=True).returncode == 0:
            return python
    return None


@pytest.fixture
def busy_feed(client, world, factory, make_session, db_session):
    """A site's feed: a weekly Berlin series across DST with an EXDATE, a moved and a
    cancelled instance; a monthly Shanghai series; a one-off. Returns (url, window, ours)."""
    now = utcnow()
    day = (now - dt.timedelta(days=21)).astimezone(BERLIN).date()
    weekly = make_session(
        title="周讲座", starts_at=dt.datetime.combine(day, dt.time(18, 0), BERLIN),
        timezone="Europe/Berlin", rrule="FREQ=WEEKLY;COUNT=30", trainer_id=None, now=now,
        exdates=[dt.datetime.combine(day + dt.timedelta(days=35), dt.time(18, 0), BERLIN)])
    rows = weekly.occurrences
    service.update_occurrence(db_session, world.admin, rows[6],
                              starts_at=rows[6].starts_at + dt.timedelta(days=1, hours=2),
                              now=now)
    service.update_occurrence(db_session, world.admin, rows[8], status="cancelled", now=now)
    # at a fixed hour (11:00 Shanghai): at now's hour it met the weekly series between
    # about 15:00 and 17:00 UTC
    make_session(title="党课", starts_at=dt.datetime.combine(
                     (now - dt.timedelta(days=70)).date(), dt.time(3, 0), dt.UTC),
                 rrule="FREQ=MONTHLY;COUNT=8", site_ids=[world.site_a.id], org_unit_ids=[],
                 now=now, duration_minutes=60)
    make_session(title="一次性", starts_at=now + dt.timedelta(days=3, hours=5), trainer_id=None,
                 rrule=None, now=now)
    db_session.commit()
    url = _feed_url(client, factory.headers(world.admin), f"sites/{world.site_a.id}")
    a, b = now - dt.timedelta(days=60), now + dt.timedelta(days=300)
    ours = sorted(
        (o.starts_at.astimezone(dt.UTC), o.session.uid, o.status == "cancelled")
        for o in db_session.query(Occurrence).all() if a <= o.starts_at < b)
    assert any(cancelled for *_, cancelled in ours)
    return url, (a, b), ours


def test_outlook_properties_and_no_method_without_organizer(client, busy_feed):
    url, *_ = busy_feed
    text = client.get(url).data.decode()
    assert "\r\nX-PUBLISHED-TTL:PT1H\r\n" in text
    assert "\r\nREFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n" in text
    # METHOD:PUBLISH would make it an iTIP message that needs an ORGANIZER per event.
    assert "\r\nMETHOD:" not in text


def test_last_modified_and_if_modified_since(client, world, busy_feed, db_session):
    url, *_ = busy_feed
    first = client.get(url)
    last_modified = first.headers["Last-Modified"]
    changed_at = max(max(o.updated_at for o in db_session.query(Occurrence).all()),
                     *(o.session.updated_at for o in db_session.query(Occurrence).all()))
    assert parse_date(last_modified) == changed_at.replace(microsecond=0)
    again = client.get(url, headers={"If-Modified-Since": last_modified})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    older = http_date(parse_date(last_modified) - dt.timedelta(seconds=1))
    assert client.get(url, headers={"If-Modified-Since": older}).status_code == 200
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    assert client.get(url, headers={"If-Modified-Since": last_modified,
                                    "If-None-Match": '"other"'}).status_code == 200
    time.sleep(1.1)  # HTTP dates count seconds
    occurrence = db_session.query(Occurrence).filter_by(status="scheduled").first()
    service.update_occurrence(db_session, world.admin, occurrence,
                              starts_at=occurrence.starts_at + dt.timedelta(hours=1),
                              now=utcnow())
    db_session.commit()
    after = client.get(url, headers={"If-Modified-Since": last_modified})
    assert after.status_code == 200
    assert parse_date(after.headers["Last-Modified"]) > parse_date(last_modified)


def test_a_deleted_session_moves_last_modified_on(client, world, make_session, db_session,
                                                   factory):
    now = utcnow()
    make_session(title="留下", starts_at=now + dt.timedelta(days=2), rrule=None, now=now)
    gone = make_session(title="删除", starts_at=now + dt.timedelta(days=3), rrule=None, now=now)
    url = _feed_url(client, factory.headers(world.admin), f"sites/{world.site_a.id}")
    last_modified = client.get(url).headers["Last-Modified"]
    time.sleep(1.1)
    service.delete_session(db_session, world.admin, gone, now=utcnow())
    db_session.commit()
    after = client.get(url, headers={"If-Modified-Since": last_modified})
    assert after.status_code == 200
    assert "删除" not in after.data.decode()
    assert parse_date(after.headers["Last-Modified"]) > parse_date(last_modified)


def _vobject_instances(text: str, a: dt.datetime, b: dt.datetime):
    import vobject

    cal = vobject.readOne(text)
    masters, overrides = {}, []
    for event in cal.vevent_list:
        if hasattr(event, "recurrence_id"):
            overrides.append(event)
        else:
            masters[event.uid.value] = event
    found = {}
    for uid, event in masters.items():
        status = event.status.value if hasattr(event, "status") else "CONFIRMED"
        rules = event.getrruleset(addRDate=True)
        starts = rules.between(a, b, inc=True) if rules is not None else [
            s for s in [event.dtstart.value] if a <= s < b]
        for start in starts:
            found[(uid, start.astimezone(dt.UTC))] = status == "CANCELLED"
    for event in overrides:
        uid = event.uid.value
        found.pop((uid, event.recurrence_id.value.astimezone(dt.UTC)), None)
        start = event.dtstart.value.astimezone(dt.UTC)
        if a <= start < b:
            found[(uid, start)] = event.status.value == "CANCELLED"
    return sorted((when, uid, cancelled) for (uid, when), cancelled in found.items())


def test_vobject_reads_moves_and_cancellations(client, busy_feed):
    assert importlib.util.find_spec("vobject"), "vobject is in requirements-dev.txt"
    url, (a, b), ours = busy_feed
    assert _vobject_instances(client.get(url).data.decode(), a, b) == ours


def test_libical_reads_moves_and_cancellations(client, busy_feed):
    python = _gi_python()
    if python is None:
        pytest.skip("libical's introspection data (gir1.2-ical-3.0, python3-gi) is missing")
    url, (a, b), ours = busy_feed
    run = subprocess.run(
        [python, str(LIBICAL_READ), str(int(a.timestamp())), str(int(b.timestamp()))],
        input=client.get(url).data.decode(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["errors"] == []
    theirs = sorted((dt.datetime.fromisoformat(w), uid, status == "CANCELLED")
                    for uid, w, status in result["instances"])
    assert theirs == ours
