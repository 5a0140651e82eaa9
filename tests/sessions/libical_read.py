"""Read an iCalendar file with libical (GObject introspection: Debian's gir1.2-ical-3.0).

Run by tests with a Python that has `gi` (Debian's /usr/bin/python3 with python3-gi):

    python3 libical_read.py START END < feed.ics

prints JSON: {"errors": [...X-LIC-ERROR texts, after libical's restriction check...],
"instances": [[uid, start (UTC ISO), status], ...]} with every recurrence of every master
between START and END (epoch seconds) expanded by libical, and RECURRENCE-ID overrides
applied on top (a moved instance at its new time, a cancelled one with its status).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import gi

gi.require_version("ICalGLib", "3.0")
from gi.repository import ICalGLib as ICal  # noqa: E402


def _children(parent, kind):
    child = parent.get_first_component(kind)
    while child is not None:
        yield child
        child = parent.get_next_component(kind)


def _errors(component) -> list[str]:
    out = []
    prop = component.get_first_property(ICal.PropertyKind.XLICERROR_PROPERTY)
    while prop is not None:
        out.append(f"{ICal.Component.kind_to_string(component.isa())}: {prop.get_xlicerror()}")
        prop = component.get_next_property(ICal.PropertyKind.XLICERROR_PROPERTY)
    for child in _children(component, ICal.ComponentKind.ANY_COMPONENT):
        out.extend(_errors(child))
    return out


def _recurrence_id(calendar, event):
    """RECURRENCE-ID in its own zone (libical's getter drops the TZID parameter)."""
    value = event.get_recurrenceid()
    prop = event.get_first_property(ICal.PropertyKind.RECURRENCEID_PROPERTY)
    param = prop.get_first_parameter(ICal.ParameterKind.TZID_PARAMETER)
    if param is not None and value.get_timezone() is None:
        value.set_timezone(calendar.get_timezone(param.get_tzid()))
    return value


def _utc(time) -> str:
    zone = time.get_timezone()
    seconds = time.as_timet_with_zone(zone) if zone is not None else time.as_timet()
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def main() -> None:
    start, end = (int(x) for x in sys.argv[1:3])
    text = sys.stdin.read()
    cal = ICal.Component.new_from_string(text)
    if cal is None:
        print(json.dumps({"errors": ["unparsable"], "instances": []}))
        return
    cal.check_restrictions()
    errors = _errors(cal)
    utc = ICal.Timezone.get_utc_timezone()
    lo = ICal.Time.new_from_timet_with_zone(start, False, utc)
    hi = ICal.Time.new_from_timet_with_zone(end, False, utc)
    instances: dict[tuple[str, str], str] = {}
    overrides = []
    for event in _children(cal, ICal.ComponentKind.VEVENT_COMPONENT):
        uid = event.get_uid()
        status = ICal.Property.status_to_string(event.get_status()) if \
            event.get_first_property(ICal.PropertyKind.STATUS_PROPERTY) else "CONFIRMED"
        if event.get_first_property(ICal.PropertyKind.RECURRENCEID_PROPERTY) is not None:
            overrides.append((uid, _utc(_recurrence_id(cal, event)), _utc(event.get_dtstart()),
                              status))
            continue
        found = []

        def collect(component, span, data, found=found):
            found.append(dt.datetime.fromtimestamp(span.get_start(), dt.UTC).isoformat())

        event.foreach_recurrence(lo, hi, collect, None)
        for when in found:
            instances[(uid, when)] = status
    for uid, rid, start_at, status in overrides:
        instances.pop((uid, rid), None)
        if lo.as_timet() <= dt.datetime.fromisoformat(start_at).timestamp() < hi.as_timet():
            instances[(uid, start_at)] = status
    print(json.dumps({"errors": errors,
                      "instances": sorted([u, w, s] for (u, w), s in instances.items())}))


if __name__ == "__main__":
    main()
