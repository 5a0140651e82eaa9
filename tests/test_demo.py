"""Demo data: seeding an empty database gives the organization the README promises."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import func, select

import demo
from accounts.models import User
from accounts.service import authenticate
from org.models import Member, OrgUnit, Site
from sessions.models import Occurrence, StudySession


def test_seed_empty_database(db_session):
    assert demo.is_empty(db_session)
    lines = demo.seed(db_session)
    db_session.commit()
    assert not demo.is_empty(db_session)

    def count(model, *where):
        return db_session.scalar(select(func.count()).select_from(model).where(*where))

    assert count(OrgUnit, OrgUnit.kind == "committee") == 1
    assert count(OrgUnit, OrgUnit.kind == "branch") == 3
    assert count(Site) == 4
    assert all(s.timezone == "Asia/Shanghai" for s in db_session.scalars(select(Site)))
    assert count(Member) == 40
    numbers = list(db_session.scalars(select(Member.member_no)))
    assert len(set(numbers)) == 40
    categories = set(db_session.scalars(select(Member.category)))
    assert categories == {"full", "probationary", "activist", "mobile"}
    roles = dict(db_session.execute(select(User.username, User.role)).all())
    assert roles["trainer"] == "trainer"
    assert roles["organizer"] == "organizer"
    assert roles["member1"] == "member"
    assert [roles[f"site{n}"] for n in range(1, 5)] == ["site_operator"] * 4
    assert authenticate(db_session, "trainer", demo.DEMO_PASSWORD).role == "trainer"

    studies = {s.kind: s for s in db_session.scalars(select(StudySession))}
    assert set(studies) == {"party_history_lecture", "party_lesson"}
    lecture = studies["party_history_lecture"]
    assert lecture.rrule == "FREQ=WEEKLY;BYDAY=WE"
    assert lecture.duration_minutes == 90
    assert len(lecture.sites) == 4
    assert count(Occurrence, Occurrence.session_id == lecture.id) >= 50
    assert count(Occurrence, Occurrence.session_id == studies["party_lesson"].id) >= 12
    assert all(o.starts_at.astimezone(ZoneInfo("Asia/Shanghai"))
               .strftime("%a %H:%M") == "Wed 19:30" for o in lecture.occurrences)
    assert "trainer / yuanjiao-demo (讲师)" in lines
    assert any(line.startswith("member1 / yuanjiao-demo") for line in lines)
