"""iCalendar: feeds built by small pure functions, and parsing of imported files.

A recurring session is one VEVENT with its RRULE in local time (DTSTART;TZID=...), the
instances that have no occurrence row as EXDATE, occurrence rows the rule no longer
gives (kept past or attended ones after a series edit) as RDATE, and every moved or
cancelled occurrence as a RECURRENCE-ID override (cancelled: STATUS:CANCELLED, the
RFC 5545 way that Google, Outlook and Apple read as "this one is off").
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import (
    Calendar,
    Event,
    Timezone,
    TimezoneDaylight,
    TimezoneStandard,
    vDuration,
    vRecur,
    vText,
)
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from core.timeutil import DEFAULT_TZ
from sessions import recurrence
from sessions.models import Occurrence, StudySession

log = logging.getLogger(__name__)

PRODID = "-//Yuanjiao//远教 学习安排//ZH"
REFRESH = dt.timedelta(hours=1)


# --- export ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def vtimezone(tzid: str) -> Timezone | None:
    """The VTIMEZONE of an IANA zone (cached).

    Written with yearly RRULEs from the zone's current rule, as Outlook and Google write
    theirs: Outlook and vobject read only the first or the RRULE part of a zone and get
    a list of RDATE transitions wrong. A zone whose rule POSIX cannot say plainly
    (Julian days, transitions outside 0-24 h) falls back to its listed transitions.
    """
    component = rule_vtimezone(tzid)
    if component is not None:
        return component
    try:
        return Timezone.from_tzid(tzid, first_date=dt.date(1990, 1, 1),
                                  last_date=dt.date(2040, 1, 1))
    except ValueError:
        log.warning("no VTIMEZONE for %s", tzid)
        return None


def _tzif_footer(tzid: str) -> str | None:
    """The POSIX TZ string at the end of a zone's TZif file (version 2 and later)."""
    import zoneinfo
    from importlib import resources
    from pathlib import Path

    data = None
    if ".." in tzid or tzid.startswith("/"):
        return None
    for base in zoneinfo.TZPATH:
        path = Path(base) / tzid
        if path.is_file():
            data = path.read_bytes()
            break
    if data is None:
        try:
            data = resources.files("tzdata.zoneinfo").joinpath(*tzid.split("/")).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            return None
    if not data.startswith(b"TZif") or data[4:5] < b"2":
        return None
    footer = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return footer.decode("ascii", "replace") or None


_POSIX = re.compile(
    r"^(?P<std><[^>]+>|[A-Za-z]{3,})(?P<stdoff>[+-]?\d{1,2}(?::\d{2}){0,2})"
    r"(?:(?P<dst><[^>]+>|[A-Za-z]{3,})(?P<dstoff>[+-]?\d{1,2}(?::\d{2}){0,2})?"
    r",M(?P<sm>\d{1,2})\.(?P<sw>[1-5])\.(?P<sd>[0-6])(?:/(?P<st>\d{1,2}(?::\d{2}){0,2}))?"
    r",M(?P<em>\d{1,2})\.(?P<ew>[1-5])\.(?P<ed>[0-6])(?:/(?P<et>\d{1,2}(?::\d{2}){0,2}))?)?$")
_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")


def _seconds(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")] + [0, 0]
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2])


def _nth_weekday(year: int, month: int, week: int, weekday: int) -> dt.date:
    """POSIX `Mm.w.d`: day `weekday` (0 = Sunday) of week `week` (5 = the last)."""
    first = dt.date(year, month, 1)
    shift = (weekday - (first.isoweekday() % 7)) % 7
    day = first + dt.timedelta(days=shift + 7 * (week - 1))
    while day.month != month:
        day -= dt.timedelta(days=7)
    return day


def rule_vtimezone(tzid: str) -> Timezone | None:
    """A VTIMEZONE with one STANDARD (and one DAYLIGHT with yearly RRULEs) from the zone's
    POSIX rule; None when the zone has no plain rule."""
    footer = _tzif_footer(tzid)
    match = _POSIX.match(footer or "")
    if match is None:
        return None
    std_name = match["std"].strip("<>")
    std = -_seconds(match["stdoff"])
    tz = Timezone()
    tz.add("tzid", tzid)
    if not match["dst"]:
        standard = TimezoneStandard()
        standard.add("dtstart", dt.datetime(1970, 1, 1))
        standard.add("tzoffsetfrom", dt.timedelta(seconds=std))
        standard.add("tzoffsetto", dt.timedelta(seconds=std))
        standard.add("tzname", std_name)
        tz.add_component(standard)
        return tz
    dst = -_seconds(match["dstoff"]) if match["dstoff"] else std + 3600
    for cls, name, month, week, day, at, before, after in (
            (TimezoneDaylight, match["dst"].strip("<>"), match["sm"], match["sw"], match["sd"],
             match["st"], std, dst),
            (TimezoneStandard, std_name, match["em"], match["ew"], match["ed"], match["et"],
             dst, std)):
        seconds = _seconds(at) if at else 7200
        if not 0 <= seconds < 86400:
            return None
        month, week, day = int(month), int(week), int(day)
        start = dt.datetime.combine(_nth_weekday(1970, month, week, day), dt.time()) + \
            dt.timedelta(seconds=seconds)
        part = cls()
        part.add("dtstart", start)
        part.add("rrule", {"freq": "yearly", "bymonth": month,
                           "byday": f"{-1 if week == 5 else week}{_DAYS[day]}"})
        part.add("tzoffsetfrom", dt.timedelta(seconds=before))
        part.add("tzoffsetto", dt.timedelta(seconds=after))
        part.add("tzname", name)
        tz.add_component(part)
    return tz


def _local(value: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return value.astimezone(tz)


def _common(event: Event, study: StudySession, location: str) -> None:
    event.add("uid", study.uid)
    event.add("dtstamp", study.updated_at.astimezone(dt.UTC))
    event.add("summary", study.title)
    if study.description:
        event.add("description", study.description)
    if location:
        event.add("location", location)
    event.add("categories", [study.kind])
    event.add("sequence", study.sequence)
    event.add("transp", "OPAQUE")


def _location(study: StudySession) -> str:
    return study.location or "、".join(s.name for s in study.sites)


def session_events(study: StudySession, occurrences: list[Occurrence]) -> list[Event]:
    """The VEVENTs of one session: a master (with overrides) or a plain one-off event."""
    tz = ZoneInfo(study.timezone)
    location = _location(study)
    duration = dt.timedelta(minutes=study.duration_minutes)
    if not study.rrule:
        events = []
        for occ in occurrences[:1]:
            event = Event()
            _common(event, study, location)
            event.add("dtstart", _local(occ.starts_at, tz))
            event.add("dtend", _local(occ.ends_at, tz))
            event.add("status", "CANCELLED" if occ.status == "cancelled" else "CONFIRMED")
            events.append(event)
        return events

    master = Event()
    _common(master, study, location)
    master.add("dtstart", _local(study.starts_at, tz))
    master.add("dtend", _local(study.starts_at + duration, tz))
    master.add("rrule", vRecur.from_ical(study.rrule))
    master.add("status", "CONFIRMED")
    originals = {o.original_start for o in occurrences}
    bound = study.materialized_until or max(originals, default=study.starts_at)
    instances = set(recurrence.expand(study.rrule, study.starts_at, tz, until=bound,
                                      limit=100_000))
    exdates = sorted((instances - originals) | {
        dt.datetime.fromisoformat(x).astimezone(dt.UTC) for x in study.exdates or []})
    rdates = sorted(originals - instances)
    if exdates:
        master.add("exdate", [_local(x, tz) for x in exdates])
    if rdates:
        master.add("rdate", [_local(x, tz) for x in rdates])
    events = [master]
    for occ in occurrences:
        plain = (occ.status != "cancelled" and occ.starts_at == occ.original_start
                 and occ.ends_at - occ.starts_at == duration and occ.title_override is None
                 and occ.description_override is None)
        if plain:
            continue
        override = Event()
        _common(override, study, location)
        if occ.title_override is not None:
            override["summary"] = vText(occ.title_override)
        if occ.description_override is not None:
            override.pop("description", None)
            if occ.description_override:
                override.add("description", occ.description_override)
        override.add("recurrence-id", _local(occ.original_start, tz))
        override.add("dtstart", _local(occ.starts_at, tz))
        override.add("dtend", _local(occ.ends_at, tz))
        override.add("status", "CANCELLED" if occ.status == "cancelled" else "CONFIRMED")
        events.append(override)
    return events


def build_calendar(studies: list[StudySession], *, name: str, timezone: str) -> Calendar:
    """A publishable calendar of sessions with their occurrences, VTIMEZONEs included."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    # No METHOD: a feed is a plain calendar, not an iTIP message. METHOD:PUBLISH would
    # require an ORGANIZER on every event (RFC 5546), and trainers have no e-mail address.
    cal.add("x-wr-calname", name)
    cal.add("x-wr-timezone", timezone)
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    # An X- property has no type of its own: give the value as a DURATION (PT1H), which is
    # what Outlook reads; a bare timedelta would be written "1:00:00".
    cal.add("x-published-ttl", vDuration(REFRESH))
    zones = {timezone}
    for study in studies:
        zones.add(study.timezone)
        for event in session_events(study, sorted(study.occurrences,
                                                  key=lambda o: o.original_start)):
            cal.add_component(event)
    for tzid in sorted(zones):
        if tzid != "UTC" and (component := vtimezone(tzid)) is not None:
            cal.subcomponents.insert(0, component)
    return cal


def to_bytes(cal: Calendar) -> bytes:
    return cal.to_ical()


# --- import ------------------------------------------------------------------------------


class CalendarFileError(ValueError):
    """The file cannot be imported; `message` says why in words for the user."""


@dataclass
class OverrideIn:
    recurrence_id: dt.datetime
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    cancelled: bool = False
    title: str = ""
    description: str = ""


@dataclass
class EventIn:
    """One series (or one-off event) read from a file, in plain values."""

    uid: str
    title: str
    description: str
    location: str
    starts_at: dt.datetime
    timezone: str
    duration_minutes: int
    rrule: str | None = None
    exdates: list[dt.datetime] = field(default_factory=list)
    overrides: list[OverrideIn] = field(default_factory=list)


def iana_name(tzid: str | None, fallback: str, file_zones: dict[str, str] | None = None
              ) -> str:
    """An IANA zone for a TZID as exporters write it (Windows names from Outlook,
    "/vendor/Europe/Berlin" from libical, or a zone the file's own VTIMEZONE describes,
    see `file_zone_names`); the fallback when there is none."""
    if not tzid:
        return fallback
    cleaned = tzid.strip().strip('"')
    if file_zones and cleaned in file_zones:
        return file_zones[cleaned]
    candidates = [cleaned, WINDOWS_TO_OLSON.get(cleaned)]
    if cleaned.startswith("/"):
        parts = cleaned.strip("/").split("/")
        candidates += ["/".join(parts[i:]) for i in range(len(parts))]
    for name in candidates:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    raise CalendarFileError(f"无法识别的时区：{tzid}")


def _sample_days(year: int) -> list[dt.datetime]:
    """Local noon of every day of three years around `year`."""
    first = dt.datetime(year - 1, 1, 1, 12)
    return [first + dt.timedelta(days=n) for n in range(3 * 365 + 1)]


def _same_offsets(zone, days: list[dt.datetime], theirs: list[dt.timedelta]) -> bool:
    return all(day.replace(tzinfo=zone).utcoffset() == offset
               for day, offset in zip(days, theirs, strict=True))


def match_vtimezone(component: Timezone, prefer: str, year: int) -> str | None:
    """The IANA zone whose offsets equal those of a file's own VTIMEZONE (Outlook's
    "Customized Time Zone") around `year`: `prefer` if it fits, else a zone Windows names
    map to, else any; a fixed whole-hour offset no zone has gives "Etc/GMT-8" and the
    like. None when nothing fits."""
    import zoneinfo

    try:
        tzinfo = component.to_tz(lookup_tzid=False)
        days = _sample_days(year)
        offsets = [day.replace(tzinfo=tzinfo).utcoffset() for day in days]
    except Exception:  # a VTIMEZONE dateutil cannot read
        return None
    theirs = [x for x in offsets if x is not None]
    if len(theirs) < len(offsets):
        return None
    seen = set()
    for name in [prefer, *sorted(set(WINDOWS_TO_OLSON.values())),
                 *sorted(zoneinfo.available_timezones())]:
        if name in seen or ("/" not in name and name != "UTC") or name.startswith(
                ("posix/", "right/")):
            continue
        seen.add(name)
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        if _same_offsets(zone, days, theirs):
            return name
    fixed = set(theirs)
    if len(fixed) == 1:
        seconds = int(fixed.pop().total_seconds())
        if seconds % 3600 == 0 and -12 <= seconds // 3600 <= 14:
            hours = seconds // 3600
            return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    return None


def file_zone_names(cal: Calendar, default_tz: str, year: int) -> dict[str, str]:
    """IANA names for the file's own VTIMEZONEs whose TZID names no known zone."""
    out = {}
    for component in cal.walk("VTIMEZONE"):
        tzid = str(component.get("TZID", "")).strip().strip('"')
        if not tzid:
            continue
        try:
            iana_name(tzid, default_tz)
            continue
        except CalendarFileError:
            pass
        name = match_vtimezone(cast(Timezone, component), default_tz, year)
        if name is not None:  # else an event using it is refused (an unused one is fine)
            out[tzid] = name
    return out


def _when(prop, default_tz: str, zones: dict[str, str] | None = None
          ) -> tuple[dt.datetime | dt.date, str]:
    """A DTSTART/DTEND/RECURRENCE-ID value as aware UTC (or a date) and its zone name."""
    value = prop.dt
    if not isinstance(value, dt.datetime):
        return value, default_tz
    tzid = prop.params.get("TZID")
    if tzid:
        name = iana_name(tzid, default_tz, zones)
        # Wall time as written, placed in the mapped IANA zone (Outlook's own VTIMEZONE
        # for "China Standard Time" describes the same rules).
        return value.replace(tzinfo=ZoneInfo(name)).astimezone(dt.UTC), name
    if value.tzinfo is None:  # floating time: the calendar's zone
        return value.replace(tzinfo=ZoneInfo(default_tz)).astimezone(dt.UTC), default_tz
    return value.astimezone(dt.UTC), default_tz


def _value(component: Any, name: str) -> Any:
    """A property's Python value (`.dt`); icalendar types a property as any of its value
    classes, most of which have none."""
    return component[name].dt


def _text(component, name: str) -> str:
    value = component.get(name)
    return str(value).strip() if value is not None else ""


def _is_utc(prop) -> bool:
    """A date-time written in UTC ("...Z"), not in a named zone nor floating."""
    value = prop.dt
    return (isinstance(value, dt.datetime) and not prop.params.get("TZID")
            and value.tzinfo is not None and value.utcoffset() == dt.timedelta(0))


def _exdates(component, default_tz: str, zones: dict[str, str] | None = None
             ) -> list[dt.datetime]:
    raw = component.get("EXDATE")
    if raw is None:
        return []
    out = []
    for group in raw if isinstance(raw, list) else [raw]:
        tzid = group.params.get("TZID")
        for item in group.dts:
            value = item.dt
            if not isinstance(value, dt.datetime):
                continue
            if tzid:
                value = value.replace(tzinfo=ZoneInfo(iana_name(tzid, default_tz, zones)))
            elif value.tzinfo is None:
                value = value.replace(tzinfo=ZoneInfo(default_tz))
            out.append(value.astimezone(dt.UTC))
    return out


def parse_calendar(content: bytes | str, *, default_tz: str = DEFAULT_TZ
                   ) -> tuple[list[EventIn], list[str]]:
    """Read an .ics as exported by Outlook, Google and others.

    Returns the series to create and notes on what was skipped (all-day events, cancelled
    events). Raises CalendarFileError with a message for a file that is not a calendar or has
    an event we cannot read.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CalendarFileError("文件不是 UTF-8 编码的 iCalendar (.ics) 文件") from exc
    if "BEGIN:VCALENDAR" not in content.upper():
        raise CalendarFileError("文件不是 iCalendar (.ics) 文件：缺少 BEGIN:VCALENDAR")
    try:
        cal = Calendar.from_ical(content)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CalendarFileError(f"日历文件格式错误：{exc}") from exc
    if isinstance(cal, list):
        cal = cal[0]
    wr_tz = cal.get("X-WR-TIMEZONE")
    if wr_tz:
        default_tz = iana_name(str(wr_tz), default_tz)
    first = next((_value(e, "DTSTART") for e in cal.walk("VEVENT")
                  if e.get("DTSTART") is not None
                  and isinstance(_value(e, "DTSTART"), dt.date)), None)
    zones = file_zone_names(cal, default_tz, first.year if first else dt.date.today().year)
    masters: dict[str, EventIn] = {}
    overrides: dict[str, list[tuple[OverrideIn, EventIn]]] = {}
    notes: list[str] = []
    events = cal.walk("VEVENT")
    if not events:
        raise CalendarFileError("日历文件中没有任何日程 (VEVENT)")
    for n, vevent in enumerate(events, start=1):
        title = _text(vevent, "SUMMARY") or "（无标题）"
        label = f"第 {n} 个日程「{title}」"
        try:
            if vevent.get("DTSTART") is None:
                raise CalendarFileError(f"{label}缺少 DTSTART")
            uid = _text(vevent, "UID") or f"no-uid-{n}"
            start, tz_name = _when(vevent["DTSTART"], default_tz, zones)
            if not isinstance(start, dt.datetime):
                notes.append(f"{label}是全天日程，已跳过（学习安排需要具体时间）")
                continue
            if vevent.get("DTEND") is not None:
                end, _ = _when(vevent["DTEND"], tz_name, zones)
                if not isinstance(end, dt.datetime):
                    raise CalendarFileError(f"{label}的 DTEND 不是时间")
            elif vevent.get("DURATION") is not None:
                end = start + _value(vevent, "DURATION")
            else:
                end = start + dt.timedelta(hours=1)
            minutes = int((end - start).total_seconds() // 60)
            if not 1 <= minutes <= 1440:
                raise CalendarFileError(f"{label}的时长必须在 1 到 1440 分钟之间（现为 {minutes}）")
            cancelled = _text(vevent, "STATUS").upper() == "CANCELLED"
            if vevent.get("RECURRENCE-ID") is not None:
                rid, _ = _when(vevent["RECURRENCE-ID"], tz_name, zones)
                if not isinstance(rid, dt.datetime):
                    notes.append(f"{label}：全天的单次修改已跳过")
                    continue
                override = OverrideIn(recurrence_id=rid, starts_at=start, ends_at=end,
                                      cancelled=cancelled,
                                      title=_text(vevent, "SUMMARY")[:200],
                                      description=_text(vevent, "DESCRIPTION"))
                one_off = EventIn(uid=uid, title=title, description=_text(vevent, "DESCRIPTION"),
                                  location=_text(vevent, "LOCATION"), starts_at=start,
                                  timezone=tz_name, duration_minutes=minutes)
                overrides.setdefault(uid, []).append((override, one_off))
                continue
            if cancelled:
                notes.append(f"{label}已取消，已跳过")
                continue
            rules = vevent.get("RRULE")
            if isinstance(rules, list):
                if len(rules) > 1:
                    raise CalendarFileError(f"{label}有多条 RRULE，无法导入")
                rules = rules[0]
            rule = rules.to_ical().decode() if rules is not None else None
            if rule is not None and _is_utc(vevent["DTSTART"]):
                # A rule on a UTC start is evaluated in UTC (RFC 5545 3.3.10): BYDAY=MO
                # means Monday in UTC, even when the calendar's zone is a day ahead.
                tz_name = "UTC"
            if vevent.get("RDATE") is not None:
                notes.append(f"{label}的附加日期 (RDATE) 未导入")
            if uid in masters:
                raise CalendarFileError(f"{label}的 UID 重复：{uid}")
            masters[uid] = EventIn(
                uid=uid, title=title[:200], description=_text(vevent, "DESCRIPTION"),
                location=_text(vevent, "LOCATION")[:300], starts_at=start, timezone=tz_name,
                duration_minutes=minutes, rrule=rule, exdates=_exdates(vevent, tz_name, zones))
        except CalendarFileError as exc:
            if str(exc).startswith(label):
                raise
            raise CalendarFileError(f"{label}：{exc}") from exc
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise CalendarFileError(f"{label}无法读取：{exc}") from exc
    result = list(masters.values())
    for uid, items in overrides.items():
        master = masters.get(uid)
        for override, one_off in items:
            if master is not None and master.rrule:
                master.overrides.append(override)
            elif not override.cancelled:
                # A changed instance exported without its series (Google does this for
                # events shared from another calendar): import it as a one-off.
                result.append(one_off)
    return result, notes


__all__ = [
    "CalendarFileError",
    "EventIn",
    "OverrideIn",
    "build_calendar",
    "parse_calendar",
    "to_bytes",
]
