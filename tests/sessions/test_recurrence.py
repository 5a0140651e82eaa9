"""Recurrence, materialization, single moves and cancels, series edits, horizons."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from core.errors import ValidationError
from sessions import recurrence, service
from sessions.models import Occurrence
from tests.sessions.conftest import NOW

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SH = ZoneInfo("Asia/Shanghai")


def _local_times(study, tz):
    return [(o.starts_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")) for o in study.occurrences]


def test_weekly_in_new_york_keeps_wall_time_across_dst(make_session):
    study = make_session(
        starts_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=NY), timezone="America/New_York",
        rrule="FREQ=WEEKLY;BYDAY=MO;COUNT=3")
    assert _local_times(study, NY) == ["2026-03-02 09:00", "2026-03-09 09:00", "2026-03-16 09:00"]
    # The UTC instant moves by an hour on 8 March, the local wall time does not.
    assert [o.starts_at.hour for o in study.occurrences] == [14, 13, 13]
    assert all(o.ends_at - o.starts_at == dt.timedelta(minutes=90) for o in study.occurrences)


def test_weekly_in_berlin_across_november_change(make_session):
    study = make_session(
        starts_at=dt.datetime(2026, 10, 20, 18, 0, tzinfo=BERLIN), timezone="Europe/Berlin",
        rrule="FREQ=WEEKLY;UNTIL=20261105")
    assert _local_times(study, BERLIN) == [
        "2026-10-20 18:00", "2026-10-27 18:00", "2026-11-03 18:00"]
    assert [o.starts_at.hour for o in study.occurrences] == [16, 17, 17]
    assert study.materialized_until is None  # bounded, fully materialized
    assert study.rrule.endswith("UNTIL=20261105T225959Z")  # end of the local day, in UTC


def test_start_is_moved_to_the_first_instance_of_the_rule(make_session):
    # Monday 2 March with a Wednesday rule: the series begins on Wednesday 4 March.
    study = make_session(starts_at=dt.datetime(2026, 3, 2, 19, 30, tzinfo=SH),
                         rrule="FREQ=WEEKLY;BYDAY=WE;COUNT=2")
    assert _local_times(study, SH) == ["2026-03-04 19:30", "2026-03-11 19:30"]
    assert study.starts_at == dt.datetime(2026, 3, 4, 11, 30, tzinfo=dt.UTC)


def test_exdates_are_skipped(make_session):
    study = make_session(rrule="FREQ=WEEKLY;COUNT=4",
                         exdates=[dt.datetime(2026, 3, 11, 19, 30, tzinfo=SH)])
    assert _local_times(study, SH) == ["2026-03-04 19:30", "2026-03-18 19:30", "2026-03-25 19:30"]


def test_monthly_first_friday(make_session):
    study = make_session(starts_at=dt.datetime(2026, 3, 1, 15, 0, tzinfo=SH),
                         rrule="FREQ=MONTHLY;BYDAY=1FR;COUNT=3")
    assert _local_times(study, SH) == ["2026-03-06 15:00", "2026-04-03 15:00", "2026-05-01 15:00"]


@pytest.mark.parametrize(("rule", "fragment"), [
    ("FREQ=WEEKLY;COUNT=3;UNTIL=20260401", "COUNT"),
    ("FREQ=HOURLY", "HOURLY"),
    ("FREQ=MINUTELY;COUNT=2", "MINUTELY"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "不产生"),
    ("FREQ=WEEKLY;BYDAY=XX", "无效"),
    ("BYDAY=MO", "FREQ"),
    ("FREQ=WEEKLY;COUNT=0", "COUNT"),
    ("garbage", "格式"),
])
def test_bad_rules_are_refused_naming_the_field(make_session, rule, fragment):
    with pytest.raises(ValidationError) as err:
        make_session(rrule=rule)
    assert err.value.details["field"] == "rrule"
    assert fragment in err.value.message


def test_all_excluded_is_refused(make_session):
    with pytest.raises(ValidationError) as err:
        make_session(rrule="FREQ=WEEKLY;COUNT=1",
                     exdates=[dt.datetime(2026, 3, 4, 19, 30, tzinfo=SH)])
    assert err.value.details["field"] == "rrule"


def test_normalize_rrule_strips_prefix_and_converts_until():
    assert recurrence.normalize_rrule("RRULE:freq=weekly;until=20260301T120000", SH) \
        == "FREQ=WEEKLY;UNTIL=20260301T040000Z"


def test_open_ended_rule_is_materialized_to_the_horizon_and_extended(make_session, db_session):
    study = make_session(rrule="FREQ=WEEKLY;BYDAY=WE")
    horizon = NOW + dt.timedelta(days=400)
    assert study.materialized_until == horizon
    first_ids = [o.id for o in study.occurrences]
    assert len(first_ids) == 57
    assert max(o.starts_at for o in study.occurrences) <= horizon
    # Nothing due a day later: the cheap path creates nothing.
    assert service.extend_horizons(db_session, NOW + dt.timedelta(days=1)) == 0
    later = NOW + dt.timedelta(days=70)
    assert service.extend_horizons(db_session, later) == 10
    db_session.commit()
    db_session.refresh(study)
    assert study.materialized_until == later + dt.timedelta(days=400)
    assert [o.id for o in study.occurrences][:57] == first_ids
    starts = [o.starts_at for o in study.occurrences]
    assert starts == sorted(set(starts))
    assert all(s.astimezone(SH).strftime("%a %H:%M") == "Wed 19:30" for s in starts)


def test_move_and_cancel_keep_ids(make_session, db_session, world):
    study = make_session(rrule="FREQ=WEEKLY;COUNT=3")
    first, second, third = study.occurrences
    ids = [first.id, second.id, third.id]
    seq = study.sequence
    new_start = dt.datetime(2026, 3, 12, 20, 0, tzinfo=SH)
    service.update_occurrence(db_session, world.admin, second, starts_at=new_start, now=NOW)
    service.update_occurrence(db_session, world.admin, third, status="cancelled", now=NOW)
    db_session.commit()
    rows = db_session.query(Occurrence).filter_by(session_id=study.id) \
        .order_by(Occurrence.original_start).all()
    assert [o.id for o in rows] == ids
    assert rows[1].starts_at == new_start.astimezone(dt.UTC)
    assert rows[1].ends_at - rows[1].starts_at == dt.timedelta(minutes=90)
    assert rows[1].original_start == dt.datetime(2026, 3, 11, 11, 30, tzinfo=dt.UTC)
    assert rows[1].overridden
    assert rows[1].sequence == 1
    assert rows[2].status == "cancelled"
    assert study.sequence > seq
    # Restoring a cancelled one works too.
    service.update_occurrence(db_session, world.admin, rows[2], status="scheduled", now=NOW)
    assert rows[2].status == "scheduled"


def test_series_edit_keeps_past_overridden_and_attended(make_session, db_session, world):
    from attendance.models import AttendanceEvent

    study = make_session(starts_at=dt.datetime(2026, 2, 18, 19, 30, tzinfo=SH),
                         rrule="FREQ=WEEKLY;BYDAY=WE;COUNT=6")
    occ = study.occurrences  # 2/18, 2/25 (past), 3/4, 3/11, 3/18, 3/25
    past_ids = [occ[0].id, occ[1].id]
    moved = occ[3]
    service.update_occurrence(db_session, world.admin, moved,
                              starts_at=dt.datetime(2026, 3, 12, 19, 30, tzinfo=SH), now=NOW)
    attended = occ[4]
    db_session.add(AttendanceEvent(occurrence_id=attended.id, member_id=world.member_a.id,
                                   site_id=world.site_a.id, type="check_in", source="test",
                                   event_id="e1"))
    db_session.commit()
    free_id = occ[2].id
    seq = study.sequence
    service.update_session(db_session, world.admin, study,
                           {"starts_at": dt.datetime(2026, 2, 18, 20, 0, tzinfo=SH),
                            "duration_minutes": 60}, now=NOW)
    db_session.commit()
    db_session.refresh(study)
    by_id = {o.id: o for o in study.occurrences}
    # Past ones untouched.
    for pid in past_ids:
        assert by_id[pid].starts_at.astimezone(SH).strftime("%H:%M") == "19:30"
        assert by_id[pid].ends_at - by_id[pid].starts_at == dt.timedelta(minutes=90)
    # The moved one keeps its move, the attended one its time.
    assert by_id[moved.id].starts_at.astimezone(SH).strftime("%m-%d %H:%M") == "03-12 19:30"
    assert by_id[attended.id].starts_at.astimezone(SH).strftime("%H:%M") == "19:30"
    assert by_id[attended.id].ends_at - by_id[attended.id].starts_at == dt.timedelta(minutes=90)
    # The free future one follows the new time and keeps its id (same local day).
    assert by_id[free_id].starts_at.astimezone(SH).strftime("%m-%d %H:%M") == "03-04 20:00"
    assert by_id[free_id].ends_at - by_id[free_id].starts_at == dt.timedelta(minutes=60)
    assert study.sequence > seq
    assert len(study.occurrences) == 6


def test_series_edit_to_fewer_instances_removes_free_future_rows(make_session, db_session,
                                                                 world):
    study = make_session(rrule="FREQ=WEEKLY;COUNT=5")
    cancelled = study.occurrences[4]
    service.update_occurrence(db_session, world.admin, cancelled, status="cancelled", now=NOW)
    db_session.commit()
    service.update_session(db_session, world.admin, study, {"rrule": "FREQ=WEEKLY;COUNT=2"},
                           now=NOW)
    db_session.commit()
    db_session.refresh(study)
    # Two from the rule, and the cancelled override is kept (never touched).
    assert [o.status for o in study.occurrences] == ["scheduled", "scheduled", "cancelled"]


def test_session_may_start_now_or_in_the_past(make_session):
    study = make_session(starts_at=NOW)
    assert len(study.occurrences) == 1
    past = make_session(title="已开过的会", starts_at=NOW - dt.timedelta(days=30),
                        site_ids=[], org_unit_ids=[1], trainer_id=None)
    assert past.occurrences[0].starts_at == NOW - dt.timedelta(days=30)
