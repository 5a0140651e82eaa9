"""Who is expected at an occurrence: the roster list and the one-member check agree."""

from __future__ import annotations

import datetime as dt

from tests.attendance.conftest import make_session


def test_expected_members_by_unit_subtree_and_home_site(factory, db_session):
    from sessions.service import expected_member_ids, is_expected

    committee = factory.org_unit("党委", kind="committee")
    branch = factory.org_unit("一支部", parent=committee)
    elsewhere = factory.org_unit("外单位")
    room = factory.site(elsewhere, "外单位会议室")
    in_branch = factory.member(branch)
    at_home_site = factory.member(elsewhere, site=room)
    outsider = factory.member(elsewhere)
    gone = factory.member(branch)
    gone.status = "transferred"
    start = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC)
    _, occ = make_session(db_session, title="党课", start=start, minutes=60,
                          units=[committee], sites=[room])
    db_session.flush()

    assert expected_member_ids(db_session, occ) == sorted([in_branch.id, at_home_site.id])
    for member in (in_branch, at_home_site, outsider, gone):
        assert is_expected(db_session, occ, member.id) == (
            member.id in (in_branch.id, at_home_site.id)), member.name

    _, nobody = make_session(db_session, title="空", start=start + dt.timedelta(days=1),
                             minutes=60)
    assert expected_member_ids(db_session, nobody) == []
    assert not is_expected(db_session, nobody, in_branch.id)
