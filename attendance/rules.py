"""Attendance rules: pure functions of the event log, the occurrence, its rules and `now`.

Nothing here touches the database, the request or the clock, so every record can be
recomputed at any time, tested without HTTP and explained to an auditor.

Intervals
---------
A member is present through two channels, which are merged in the end:

* **In person, at a site**: ``check_in`` / ``qr_check_in`` at a site opens an interval,
  ``check_out`` closes it. A second check-in at the same site while checked in changes
  nothing (the first time counts); a check-in at another site moves the member (the
  service refuses that with a Conflict, so the log normally never holds it).
  Presence in a room ends only by a check-out (roll call, QR check-out, an organizer's
  correction) or by the occurrence's end. A site screen or operator going offline
  (``site_offline``) is *never* a leave: the members are in the room, the link is not.
  The site's offline periods (`site_down_periods`) are reported beside the records
  (站点离线), not subtracted from them.
* **Watching alone**: ``viewer_join`` opens, ``viewer_heartbeat`` keeps it alive (and
  reopens it after a gap or a leave), ``viewer_leave`` closes. When the gap between two
  signs of life exceeds the grace period the interval is closed at the last sign of life;
  a gap within the grace period (a network blip) changes nothing.

Open intervals run to the *horizon*, ``min(now, occurrence end, broadcast end)``; a
viewer whose last sign of life is older than the grace period at the horizon is closed
at that last sign. Intervals of both channels are merged (rejoins and overlaps count
once) and clipped to the occurrence's ``[start, end]``.

Status, in order of precedence
------------------------------
1. **correction**: the latest organizer correction of the member sets the status and/or
   minutes it names (the rest stays derived).
2. **present**, when the member was fully present: no fault below applies.
3. **excused**: an approved leave request excuses any fault (absent, late, left early).
4. **absent**: no minute attended and no interval open now, once the occurrence is over;
   before its start such a member is **not_started** (未开始), during it **not_arrived**
   (未到): nobody is absent before the end.
5. **late**: the first join is more than ``late_after_minutes`` after the start.
6. **left_early**: only once the occurrence is over (``now >= end``): the last leave is
   more than ``left_early_minutes`` before the end, or the minutes attended are below
   ``present_threshold_percent`` of the scheduled minutes.
7. **present** otherwise.

A member both late and leaving early is ``late`` (the first fault); ``flags`` lists
every fault that applied, for the notes column of the sheets.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

OPENING = frozenset({"check_in", "qr_check_in"})
#: Not (yet) a record: nobody came so far, and the occurrence is not over.
PENDING = frozenset({"not_started", "not_arrived"})
SITE_EVENTS = frozenset({"site_online", "site_offline"})
VIEWER_EVENTS = frozenset({"viewer_join", "viewer_heartbeat", "viewer_leave"})


class Fact(Protocol):
    """What the rules read of an event (AttendanceEvent satisfies it)."""

    type: str
    member_id: int | None
    site_id: int | None

    @property
    def at(self) -> dt.datetime: ...


@dataclass(frozen=True)
class SimpleFact:
    """A plain event, for tests and for callers that do not hold ORM rows."""

    type: str
    at: dt.datetime
    member_id: int | None = None
    site_id: int | None = None


@dataclass(frozen=True)
class Rules:
    """The thresholds an occurrence is judged by."""

    late_after_minutes: int = 10
    present_threshold_percent: int = 80
    left_early_minutes: int = 10
    grace_seconds: int = 90


@dataclass(frozen=True)
class Interval:
    start: dt.datetime
    end: dt.datetime
    #: The site of an in-person interval; None for watching alone.
    site_id: int | None = None
    #: Still running at the horizon (the member is there now).
    open: bool = False


@dataclass(frozen=True)
class Override:
    """A correction as the rules see it: a status and/or minutes."""

    status: str | None = None
    minutes: float | None = None
    reason: str = ""


@dataclass
class MemberRecord:
    """One member's derived attendance at one occurrence."""

    member_id: int
    status: str
    minutes: float
    first_join: dt.datetime | None
    last_leave: dt.datetime | None
    #: The site the member attended at last (None: watched alone, or never came).
    site_id: int | None
    intervals: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    excused: bool = False
    corrected: bool = False
    #: Present right now (an interval open at `now`).
    here_now: bool = False
    derived_status: str = ""
    derived_minutes: float = 0.0


def merge(intervals: Iterable[tuple[dt.datetime, dt.datetime]]
          ) -> list[tuple[dt.datetime, dt.datetime]]:
    """Union of intervals, sorted; touching or overlapping intervals become one."""
    out: list[list[dt.datetime]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def merge_ranges(ranges: Iterable[Sequence[float]]) -> list[list[float]]:
    """Union of numeric ranges [[a, b], ...] (played seconds of a recording)."""
    out: list[list[float]] = []
    for a, b in sorted((float(r[0]), float(r[1])) for r in ranges):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def total_seconds(intervals: Iterable[tuple[dt.datetime, dt.datetime]]) -> float:
    return sum((b - a).total_seconds() for a, b in intervals)


def clip(intervals: Iterable[tuple[dt.datetime, dt.datetime]], start: dt.datetime,
         end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """Intervals cut to [start, end]; empty pieces dropped."""
    out = []
    for a, b in intervals:
        a2, b2 = max(a, start), min(b, end)
        if b2 > a2:
            out.append((a2, b2))
    return out


def _subtract(interval: tuple[dt.datetime, dt.datetime],
              holes: list[tuple[dt.datetime, dt.datetime]]
              ) -> list[tuple[dt.datetime, dt.datetime]]:
    pieces = [interval]
    for h0, h1 in holes:
        nxt = []
        for a, b in pieces:
            if h1 <= a or h0 >= b:
                nxt.append((a, b))
                continue
            if a < h0:
                nxt.append((a, h0))
            if h1 < b:
                nxt.append((h1, b))
        pieces = nxt
    return pieces


def site_down_periods(events: Iterable[Fact], horizon: dt.datetime, grace_seconds: int
                      ) -> dict[int, list[tuple[dt.datetime, dt.datetime]]]:
    """Per site, the periods its screen was offline for longer than the grace period."""
    grace = dt.timedelta(seconds=grace_seconds)
    per_site: dict[int, list[Fact]] = defaultdict(list)
    for ev in events:
        if ev.type in SITE_EVENTS and ev.site_id is not None:
            per_site[ev.site_id].append(ev)
    out: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}
    for site_id, evs in per_site.items():
        down: list[tuple[dt.datetime, dt.datetime]] = []
        off_since: dt.datetime | None = None
        for ev in sorted(evs, key=lambda e: e.at):
            if ev.type == "site_offline" and off_since is None:
                off_since = ev.at
            elif ev.type == "site_online" and off_since is not None:
                if ev.at - off_since > grace:
                    down.append((off_since, ev.at))
                off_since = None
        if off_since is not None and horizon - off_since > grace:
            down.append((off_since, max(horizon, off_since)))
        if down:
            out[site_id] = down
    return out


def member_intervals(events: Iterable[Fact], *, horizon: dt.datetime, grace_seconds: int
                     ) -> dict[int, list[Interval]]:
    """Raw (unclipped, unmerged) intervals per member, in person and watching alone.

    `horizon` is where still-open intervals end: min(now, occurrence end, broadcast end).
    """
    grace = dt.timedelta(seconds=grace_seconds)
    evs = sorted(events, key=lambda e: e.at)
    per_member: dict[int, list[Fact]] = defaultdict(list)
    for ev in evs:
        if ev.member_id is not None and (ev.type in OPENING or ev.type == "check_out"
                                         or ev.type in VIEWER_EVENTS):
            per_member[ev.member_id].append(ev)

    out: dict[int, list[Interval]] = {}
    for member_id, mevs in per_member.items():
        found: list[Interval] = []
        # In person: one site at a time.
        in_site: int | None = None
        in_since: dt.datetime | None = None

        # Watching alone: signs of life.
        view_since: dt.datetime | None = None
        last_sign: dt.datetime | None = None

        for ev in mevs:
            if ev.at > horizon:
                break
            if ev.type in OPENING:
                if in_since is not None and in_site != ev.site_id:
                    found.append(Interval(in_since, ev.at, in_site))
                    in_site, in_since = None, None
                if in_since is None:
                    in_site, in_since = ev.site_id, ev.at
            elif ev.type == "check_out":
                if in_since is not None:
                    found.append(Interval(in_since, ev.at, in_site))
                in_site, in_since = None, None
            else:  # viewer events
                if view_since is not None and ev.at - last_sign > grace:  # type: ignore[operator]
                    found.append(Interval(view_since, last_sign))  # type: ignore[arg-type]
                    view_since = None
                if ev.type == "viewer_leave":
                    if view_since is not None:
                        found.append(Interval(view_since, ev.at))
                    view_since, last_sign = None, None
                else:
                    if view_since is None:
                        view_since = ev.at
                    last_sign = ev.at
        if in_since is not None:
            found.append(Interval(in_since, max(horizon, in_since), in_site, open=True))
        if view_since is not None:
            if horizon - last_sign > grace:  # type: ignore[operator]
                found.append(Interval(view_since, last_sign))  # type: ignore[arg-type]
            else:
                found.append(Interval(view_since, max(horizon, view_since), open=True))
        out[member_id] = found
    return out


def derive_records(
    events: Iterable[Fact],
    *,
    expected_member_ids: Iterable[int],
    start: dt.datetime,
    end: dt.datetime,
    rules: Rules,
    now: dt.datetime,
    excused_member_ids: Iterable[int] = (),
    overrides: Mapping[int, Override] | None = None,
    closes_at: dt.datetime | None = None,
) -> dict[int, MemberRecord]:
    """Every expected member's record (plus anyone who came without being expected).

    `closes_at` is the broadcast's end when it ended before the scheduled end.
    """
    horizon = min(now, end, closes_at) if closes_at else min(now, end)
    horizon_end = min(end, closes_at) if closes_at else end
    raw = member_intervals(events, horizon=horizon, grace_seconds=rules.grace_seconds)
    excused = set(excused_member_ids)
    overrides = overrides or {}
    scheduled = max((end - start).total_seconds(), 1.0)
    member_ids = list(dict.fromkeys([*expected_member_ids, *raw.keys()]))
    records: dict[int, MemberRecord] = {}
    for member_id in member_ids:
        intervals = raw.get(member_id, [])
        merged = merge(clip([(i.start, i.end) for i in intervals], start, end))
        seconds = total_seconds(merged)
        # Nobody is "here" once the broadcast ended or the records were frozen.
        here_now = any(i.open for i in intervals) and now < horizon_end
        # Intervals that count: they reach into the occurrence, or are running now.
        relevant = [i for i in intervals if (i.end > start and i.start < end) or i.open]
        first_join = min((i.start for i in relevant), default=None)
        last_leave = None
        if relevant and not here_now:
            last_leave = min(max(i.end for i in relevant), end)
        site_id = None
        if relevant:
            latest = max(relevant, key=lambda i: i.start)
            site_id = latest.site_id
        minutes = round(seconds / 60.0, 1)

        flags: list[str] = []
        attended = seconds > 0 or here_now
        if not attended:
            flags.append("absent")
        else:
            if first_join and first_join > start + dt.timedelta(minutes=rules.late_after_minutes):
                flags.append("late")
            if now >= end:
                early = (last_leave is not None and last_leave
                         < end - dt.timedelta(minutes=rules.left_early_minutes))
                short = seconds * 100 < rules.present_threshold_percent * scheduled
                if early or short:
                    flags.append("left_early")
        if flags == ["absent"] and now < end:
            flags = []  # not over yet: nobody is absent before the end
            status = ("excused" if member_id in excused
                      else "not_started" if now < start else "not_arrived")
        elif not flags:
            status = "present"
        elif member_id in excused:
            status = "excused"
        else:
            status = flags[0]

        record = MemberRecord(
            member_id=member_id, status=status, minutes=minutes, first_join=first_join,
            last_leave=last_leave, site_id=site_id, intervals=merged, flags=flags,
            excused=member_id in excused, here_now=here_now, derived_status=status,
            derived_minutes=minutes,
        )
        override = overrides.get(member_id)
        if override is not None:
            if override.status:
                record.status = override.status
            if override.minutes is not None:
                record.minutes = round(float(override.minutes), 1)
            record.corrected = True
        records[member_id] = record
    return records


def present_now(events: Iterable[Fact], *, now: dt.datetime, grace_seconds: int
                ) -> dict[int, int | None]:
    """Members present right now -> the site they are at (None: watching alone)."""
    raw = member_intervals(events, horizon=now, grace_seconds=grace_seconds)
    out: dict[int, int | None] = {}
    for member_id, intervals in raw.items():
        running = [i for i in intervals if i.open]
        if running:
            # In person wins over a phone left open in the room.
            in_person = [i for i in running if i.site_id is not None]
            out[member_id] = (in_person or running)[0].site_id
    return out


def checked_in_site(events: Iterable[Fact], member_id: int) -> int | None:
    """The site a member is checked in at now (in person), by check-in/out order alone."""
    site: int | None = None
    for ev in sorted(events, key=lambda e: e.at):
        if ev.member_id != member_id:
            continue
        if ev.type in OPENING:
            site = ev.site_id
        elif ev.type == "check_out":
            site = None
    return site
