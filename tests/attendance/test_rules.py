"""The attendance rules, as pure functions: no database, no HTTP."""

from __future__ import annotations

import datetime as dt

from attendance.rules import (
    Override,
    Rules,
    SimpleFact,
    derive_records,
    merge,
    merge_ranges,
    present_now,
)

T0 = dt.datetime(2024, 7, 1, 11, 0, tzinfo=dt.UTC)  # 19:00 in Beijing
END = T0 + dt.timedelta(minutes=60)
RULES = Rules(late_after_minutes=10, present_threshold_percent=80, left_early_minutes=10,
              grace_seconds=90)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def ev(type_: str, minutes: float, member: int | None = 1, site: int | None = 7):
    return SimpleFact(type=type_, at=at(minutes), member_id=member, site_id=site)


def derive(events, now=None, expected=(1,), **kw):
    return derive_records(events, expected_member_ids=expected, start=T0, end=END,
                          rules=RULES, now=now or at(120), **kw)


def viewer(minutes: list[float], member: int = 1, leave: float | None = None):
    out = [ev("viewer_join", minutes[0], member, None)]
    out += [ev("viewer_heartbeat", m, member, None) for m in minutes[1:]]
    if leave is not None:
        out.append(ev("viewer_leave", leave, member, None))
    return out


def test_merge_joins_overlapping_and_touching_intervals():
    assert merge([(at(10), at(20)), (at(0), at(5)), (at(5), at(8)), (at(15), at(30))]) == [
        (at(0), at(8)), (at(10), at(30))]
    assert merge_ranges([[10, 20], [0, 5], [4, 12], [30, 30]]) == [[0, 20]]


def test_full_attendance_is_present_with_intervals_clipped_to_the_occurrence():
    rec = derive([ev("check_in", -15), ev("check_out", 75)])[1]
    assert rec.status == "present"
    assert rec.minutes == 60.0
    assert rec.first_join == at(-15)
    assert rec.last_leave == END
    assert rec.site_id == 7


def test_rejoins_are_merged_and_counted_once():
    events = [ev("check_in", 0), ev("check_out", 20), ev("check_in", 25), ev("check_out", 60),
              # the same member also had a phone open in the room: overlap counts once
              *viewer([10, 10.25, 10.5, 11], leave=12)]
    rec = derive(events)[1]
    assert rec.intervals == [(at(0), at(20)), (at(25), at(60))]
    assert rec.minutes == 55.0
    assert rec.status == "present"


def test_late_threshold_is_strictly_after_late_after_minutes():
    assert derive([ev("check_in", 10), ev("check_out", 60)])[1].status == "present"
    rec = derive([ev("check_in", 10.5), ev("check_out", 60)])[1]
    assert rec.status == "late"
    assert rec.flags == ["late"]


def test_left_early_by_last_leave_and_by_share():
    # leaves 11 min before the end: left early (left_early_minutes = 10)
    assert derive([ev("check_in", 0), ev("check_out", 49)])[1].status == "left_early"
    # leaves 9 min before the end with 51/60 = 85 % attended: present
    assert derive([ev("check_in", 0), ev("check_out", 51)])[1].status == "present"
    # stays to the end but was away for 20 minutes: 40/60 < 80 %: left early
    rec = derive([ev("check_in", 0), ev("check_out", 10), ev("check_in", 30)])[1]
    assert rec.minutes == 40.0
    assert rec.status == "left_early"


def test_left_early_is_judged_only_once_the_occurrence_is_over():
    rec = derive([ev("check_in", 0), ev("check_out", 20)], now=at(30))[1]
    assert rec.status == "present"
    assert rec.minutes == 20.0


def test_late_wins_over_left_early_and_both_are_flagged():
    rec = derive([ev("check_in", 20), ev("check_out", 40)])[1]
    assert rec.status == "late"
    assert rec.flags == ["late", "left_early"]


def test_absent_member_and_walk_in():
    recs = derive([ev("check_in", 0, member=2)], expected=(1,))
    assert recs[1].status == "absent"
    assert recs[1].minutes == 0
    assert recs[1].first_join is None
    assert recs[2].status == "present"


def test_viewer_gap_within_grace_is_not_a_leave():
    beats = [0, 0.25, 0.5, *[0.5 + 1.5 * k for k in range(1, 40)]]  # a 90 s gap each time
    beats = [b for b in beats if b <= 60]
    rec = derive(viewer(beats))[1]
    # the last beat is 60 s before the end: within grace, so the end closes it
    assert rec.intervals == [(at(0), END)]
    assert rec.status == "present"


def test_viewer_gap_beyond_grace_closes_at_the_last_sign_of_life():
    beats = [0, 0.25, 0.5, 2.1, 2.35, *range(3, 61)]  # 1.6 min = 96 s > 90 s gap
    rec = derive(viewer(beats))[1]
    assert rec.intervals == [(at(0), at(0.5)), (at(2.1), at(60))]


def test_viewer_without_heartbeats_after_grace_is_closed_live():
    events = viewer([0, 0.25, 0.5])
    rec = derive(events, now=at(1.5))[1]  # 60 s since last beat: still here
    assert rec.here_now
    assert rec.minutes == 1.5
    rec = derive(events, now=at(5))[1]  # 4.5 min since: gone at the last beat
    assert not rec.here_now
    assert rec.intervals == [(at(0), at(0.5))]
    assert rec.last_leave == at(0.5)


def test_a_site_going_offline_never_ends_presence_in_the_room():
    """A room's link dropping is not the members leaving: a blip, an outage, or a link
    still down at the end all keep the roll-called members present to the end."""
    base = [ev("site_online", -5, None), ev("check_in", 0)]
    blip = [ev("site_offline", 30, None), ev("site_online", 31, None)]
    assert derive([*base, *blip])[1].minutes == 60.0
    outage = [ev("site_offline", 30, None), ev("site_online", 40, None)]
    rec = derive([*base, *outage])[1]
    assert rec.intervals == [(at(0), END)]
    assert rec.status == "present"
    rec = derive([*base, ev("site_offline", 5, None)])[1]
    assert (rec.status, rec.minutes, rec.last_leave) == ("present", 60.0, END)
    # live, 40 minutes into an outage: still here
    assert present_now([*base, ev("site_offline", 5, None)], now=at(45),
                       grace_seconds=90) == {1: 7}
    # a check-out still ends the stay, link or no link
    rec = derive([*base, ev("site_offline", 5, None), ev("check_out", 30)])[1]
    assert rec.intervals == [(at(0), at(30))]


def test_site_down_periods_are_reported_beyond_the_grace_period():
    from attendance.rules import site_down_periods

    events = [ev("site_online", -5, None), ev("site_offline", 10, None),
              ev("site_online", 10.5, None), ev("site_offline", 30, None),
              ev("site_online", 40, None), ev("site_offline", 55, None)]
    assert site_down_periods(events, at(60), 90) == {7: [(at(30), at(40)), (at(55), at(60))]}


def test_the_end_of_the_occurrence_or_broadcast_closes_open_intervals():
    rec = derive([ev("check_in", 0)])[1]
    assert rec.intervals == [(at(0), END)]
    assert rec.last_leave == END
    rec = derive([ev("check_in", 0)], closes_at=at(45))[1]
    assert rec.minutes == 45.0


def test_excused_only_excuses_faults():
    recs = derive([ev("check_in", 0, member=2)], expected=(1, 2), excused_member_ids={1, 2})
    assert recs[1].status == "excused"
    assert recs[2].status == "present"
    late = derive([ev("check_in", 30)], excused_member_ids={1})[1]
    assert late.status == "excused"
    assert late.flags == ["late", "left_early"]


def test_a_correction_overrides_status_and_minutes():
    rec = derive([], overrides={1: Override(status="present", minutes=55, reason="签到机故障")})[1]
    assert (rec.status, rec.minutes, rec.corrected) == ("present", 55.0, True)
    assert rec.derived_status == "absent"
    only_minutes = derive([ev("check_in", 0)], overrides={1: Override(minutes=30)})[1]
    assert only_minutes.status == "present"
    assert only_minutes.minutes == 30.0


def test_present_now_groups_by_site_and_viewers():
    events = [ev("check_in", 0, 1, 7), ev("check_in", 0, 2, 8), ev("check_out", 5, 2, 8),
              *viewer([0, 1, 2, 5], member=3), *viewer([0, 1], member=4)]
    assert present_now(events, now=at(6), grace_seconds=90) == {1: 7, 3: None}


def test_nobody_is_absent_before_the_end():
    assert derive([], now=at(-30))[1].status == "not_started"
    assert derive([], now=at(30))[1].status == "not_arrived"
    assert derive([], now=at(30))[1].flags == []
    assert derive([], now=at(61))[1].status == "absent"
    assert derive([], now=at(30), excused_member_ids=[1])[1].status == "excused"
    assert derive([], now=at(30), excused_member_ids=[1])[1].flags == []  # no 缺席 note
    assert derive([ev("check_in", 20)], now=at(30))[1].status == "late"
