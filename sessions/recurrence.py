"""Recurrence: RFC 5545 RRULEs validated and expanded in the session's local time zone.

Rules are expanded on naive local wall times and only then placed in the zone, so a
weekly 09:00 in America/New_York stays 09:00 local across the DST changes (the UTC
instant moves by an hour instead). UNTIL is kept in UTC in the stored rule, as RFC 5545
requires when DTSTART carries a TZID, and turned back into local wall time to expand.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

from core.errors import ValidationError

#: FREQ values we accept, coarsest last; SECONDLY/MINUTELY/HOURLY make no study plan.
ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
#: One materialization may not create more rows than this (a typo such as BYHOUR=0..23
#: on a daily rule would otherwise write tens of thousands of occurrences).
MAX_OCCURRENCES = 5000

#: Units of each frequency in one Gregorian cycle: dates and weekdays repeat every 400
#: years (146,097 days, exactly 20,871 weeks), so a rule that yields nothing in one full
#: period of its own (the cycle and its INTERVAL together) yields nothing ever.
_CYCLE_UNITS = {"YEARLY": 400, "MONTHLY": 4800, "WEEKLY": 20871, "DAILY": 146097}

_UNTIL_RE = re.compile(r"^(\d{8})(T(\d{6})(Z?))?$")


def _parts(rule: str) -> list[tuple[str, str]]:
    rule = (rule or "").strip()
    if rule.upper().startswith("RRULE:"):
        rule = rule[6:]
    if not rule:
        raise ValidationError("重复规则为空", field="rrule")
    out = []
    for item in rule.split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValidationError(f"重复规则格式错误：{item}", field="rrule")
        key, value = item.split("=", 1)
        out.append((key.strip().upper(), value.strip().upper()))
    return out


def _until_to_utc(value: str, tz: ZoneInfo) -> dt.datetime:
    """UNTIL as an aware UTC instant: a date means the end of that local day."""
    m = _UNTIL_RE.match(value)
    if not m:
        raise ValidationError(f"重复规则的 UNTIL 无效：{value}", field="rrule")
    try:
        day = dt.datetime.strptime(m.group(1), "%Y%m%d")
        if m.group(2):
            t = dt.datetime.strptime(m.group(3), "%H%M%S").time()
            local = day.replace(hour=t.hour, minute=t.minute, second=t.second)
            if m.group(4):
                return local.replace(tzinfo=dt.UTC)
        else:
            local = day.replace(hour=23, minute=59, second=59)
    except ValueError as exc:
        raise ValidationError(f"重复规则的 UNTIL 无效：{value}", field="rrule") from exc
    return local.replace(tzinfo=tz).astimezone(dt.UTC)


def normalize_rrule(rule: str, tz: ZoneInfo) -> str:
    """Check a rule and return it canonical: upper case, no prefix, UNTIL in UTC ("Z").

    Refuses unknown or too fine frequencies, COUNT together with UNTIL, and anything
    dateutil cannot parse, each as a ValidationError on the field `rrule`.
    """
    parts = _parts(rule)
    keys = [k for k, _ in parts]
    if len(set(keys)) != len(keys):
        raise ValidationError("重复规则中有重复的参数", field="rrule")
    values = dict(parts)
    freq = values.get("FREQ")
    if not freq:
        raise ValidationError("重复规则缺少 FREQ", field="rrule")
    if freq not in ALLOWED_FREQS:
        raise ValidationError(
            f"不支持的重复频率：{freq}（只允许按天、周、月、年）", field="rrule",
            details={"allowed": list(ALLOWED_FREQS)})
    if "COUNT" in values and "UNTIL" in values:
        raise ValidationError("重复规则不能同时包含 COUNT 和 UNTIL", field="rrule")
    if "COUNT" in values and (not values["COUNT"].isdigit() or int(values["COUNT"]) < 1):
        raise ValidationError("重复规则的 COUNT 必须是正整数", field="rrule")
    out = []
    for key, value in parts:
        if key == "UNTIL":
            value = _until_to_utc(value, tz).strftime("%Y%m%dT%H%M%SZ")
        out.append(f"{key}={value}")
    canonical = ";".join(out)
    # Let dateutil judge everything else (BYDAY=9XX, INTERVAL=0, unknown keys...).
    try:
        _build(canonical, dt.datetime(2000, 1, 1, 9, 0), tz)
    except ValidationError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValidationError(f"重复规则无效：{exc}", field="rrule") from exc
    return canonical


def is_open_ended(rule: str | None) -> bool:
    """True when a rule has neither COUNT nor UNTIL (materialized over a horizon)."""
    if not rule:
        return False
    keys = {k for k, _ in _parts(rule)}
    return not keys & {"COUNT", "UNTIL"}


def _build(rule: str, start_local_naive: dt.datetime, tz: ZoneInfo):
    """A dateutil rrule on naive local wall times (UNTIL converted to local wall time)."""
    out = []
    for key, value in _parts(rule):
        if key == "UNTIL":
            until = _until_to_utc(value, tz).astimezone(tz).replace(tzinfo=None)
            value = until.strftime("%Y%m%dT%H%M%S")
        out.append(f"{key}={value}")
    return rrulestr(";".join(out), dtstart=start_local_naive)


def localize(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A local wall time in `tz`, as aware UTC (a time in a DST gap uses the earlier offset)."""
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)


def expand(
    rule: str | None,
    start: dt.datetime,
    tz: ZoneInfo,
    *,
    until: dt.datetime | None = None,
    after: dt.datetime | None = None,
    limit: int = MAX_OCCURRENCES,
) -> list[dt.datetime]:
    """UTC starts of the series anchored at `start` (aware), in (after, until] if given.

    A one-off session (no rule) yields its start. More than `limit` starts in the window
    is refused: the rule (or the horizon) is unreasonable for a study plan.
    """
    if not rule:
        starts = [start.astimezone(dt.UTC)]
    elif not yields_any(rule, start, tz):
        starts = []
    else:
        local_start = start.astimezone(tz).replace(tzinfo=None)
        rr = _build(rule, local_start, tz)
        starts = []
        # Compare in local wall time; the window bounds are converted once.
        lo = after.astimezone(tz).replace(tzinfo=None) if after else None
        hi = until.astimezone(tz).replace(tzinfo=None) + dt.timedelta(days=1) if until else None
        iterator = rr.xafter(lo, inc=False) if lo else iter(rr)
        for naive in iterator:
            if hi is not None and naive > hi:
                break
            starts.append(localize(naive, tz))
            if len(starts) > limit:
                raise ValidationError(
                    f"重复规则在时间范围内产生的场次超过 {limit} 个", field="rrule")
    return [s for s in starts
            if (after is None or s > after) and (until is None or s <= until)]


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _impossible_month_days(values: dict[str, str]) -> bool:
    """The usual rule that yields nothing, found without iterating: BYMONTHDAY days that
    none of the BYMONTH months has (February 30th, April 31st)."""
    if "BYMONTHDAY" not in values or "BYMONTH" not in values:
        return False
    try:
        days = [int(d) for d in values["BYMONTHDAY"].split(",")]
        months = [int(m) for m in values["BYMONTH"].split(",")]
    except ValueError:
        return False
    if any(d < 0 for d in days) or not all(1 <= m <= 12 for m in months):
        return False
    return all(d > _MONTH_DAYS[m - 1] for d in days for m in months)


def yields_any(rule: str, start: dt.datetime, tz: ZoneInfo) -> bool:
    """Whether the rule, anchored at `start`, ever yields a date (COUNT and UNTIL aside).

    dateutil looks for a first date up to the year 9999: a rule that yields none
    (February 30th) cost seconds of CPU. The rule's pattern repeats after one period
    (a multiple of the 400-year cycle that keeps INTERVAL's phase), so it is tried from
    the same date moved whole periods ahead, as near the year 9999 as leaves one full
    period: at most one period of iteration (0.2 s for a daily rule, far less for others).
    """
    parts = _parts(rule)
    values = dict(parts)
    if _impossible_month_days(values):
        return False
    cycle = _CYCLE_UNITS.get(values.get("FREQ", ""))
    if cycle is None:
        return False
    try:
        interval = max(1, int(values.get("INTERVAL") or 1))
    except ValueError:
        return False
    period_years = math.lcm(interval, cycle) // cycle * 400
    local = start.astimezone(tz).replace(tzinfo=None)
    periods = max(0, (dt.MAXYEAR - period_years - local.year) // period_years)
    probe_start = local.replace(year=local.year + periods * period_years)
    probe = ";".join(f"{k}={v}" for k, v in parts if k not in ("COUNT", "UNTIL"))
    return rrulestr(probe, dtstart=probe_start).after(probe_start, inc=True) is not None


def first_start(rule: str, start: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """The first start the rule gives on or after `start` (None: the rule yields nothing)."""
    if not yields_any(rule, start, tz):
        return None
    local_start = start.astimezone(tz).replace(tzinfo=None)
    rr = _build(rule, local_start, tz)
    naive = rr.after(local_start, inc=True)
    return localize(naive, tz) if naive is not None else None


def describe(rule: str | None, start: dt.datetime, tz: ZoneInfo) -> str:
    """A rule in words, in the reader's language: 每周三 19:30, 每月第一个周五 19:30, 每两周的
    周一、周三 19:30; 共 8 次 / 至 2027-01-20. A rule the words do not cover stays as written."""
    from flask_babel import gettext as _

    local = start.astimezone(tz)
    time = f"{local:%H:%M}"
    if not rule:
        return _("不重复（%(date)s %(time)s）", date=f"{local:%Y-%m-%d}", time=time)
    parts = dict(_parts(rule))
    names = {"MO": _("周一"), "TU": _("周二"), "WE": _("周三"), "TH": _("周四"),
             "FR": _("周五"), "SA": _("周六"), "SU": _("周日")}
    ordinals = {"1": _("第一个"), "2": _("第二个"), "3": _("第三个"), "4": _("第四个"),
                "-1": _("最后一个")}
    freq, interval = parts.get("FREQ"), int(parts.get("INTERVAL", "1") or 1)
    known = {"FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "UNTIL", "COUNT", "WKST"}
    if set(parts) - known:
        return rule
    sep = _("、")
    if freq == "DAILY" and "BYDAY" not in parts:
        text = _("每天 %(time)s", time=time) if interval == 1 else _(
            "每 %(n)s 天 %(time)s", n=interval, time=time)
    elif freq == "WEEKLY":
        codes = parts.get("BYDAY", "").split(",") if parts.get("BYDAY") else [
            ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][local.weekday()]]
        if any(c not in names for c in codes):
            return rule
        days = sep.join(names[c] for c in codes)
        text = _("每%(days)s %(time)s", days=days, time=time) if interval == 1 else _(
            "每 %(n)s 周的%(days)s %(time)s", n=interval, days=days, time=time)
    elif freq == "MONTHLY" and "BYDAY" in parts:
        m = re.fullmatch(r"(-?\d)(MO|TU|WE|TH|FR|SA|SU)", parts["BYDAY"])
        if not m or m.group(1) not in ordinals:
            return rule
        what = _("%(nth)s%(day)s", nth=ordinals[m.group(1)], day=names[m.group(2)])
        text = _("每月%(what)s %(time)s", what=what, time=time) if interval == 1 else _(
            "每 %(n)s 个月的%(what)s %(time)s", n=interval, what=what, time=time)
    elif freq == "MONTHLY":
        day = parts.get("BYMONTHDAY", str(local.day))
        if not re.fullmatch(r"-?\d{1,2}", day):
            return rule
        text = _("每月 %(day)s 日 %(time)s", day=day, time=time) if interval == 1 else _(
            "每 %(n)s 个月的 %(day)s 日 %(time)s", n=interval, day=day, time=time)
    else:
        return rule
    if parts.get("COUNT"):
        text += _("，共 %(n)s 次", n=parts["COUNT"])
    elif parts.get("UNTIL"):
        until = _until_to_utc(parts["UNTIL"], tz).astimezone(tz)
        text += _("，至 %(date)s", date=f"{until:%Y-%m-%d}")
    return text
