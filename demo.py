"""Demo data for the embedded default: a Party committee with three branches, four meeting
rooms, forty members, a user of every role and two recurring study sessions.

Everything goes through the domain services, so the demo obeys the same rules as real data
(occurrences materialize, conflicts are checked).
"""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.principals import SYSTEM
from core.timeutil import DEFAULT_TZ
from core.types import utcnow
from org.models import OrgUnit

log = logging.getLogger(__name__)

DEMO_PASSWORD = "yuanjiao-demo"
TZ = DEFAULT_TZ

BRANCHES = (
    ("第一党支部（一工区）", "一工区会议室", "一工区生活营地 2 号楼"),
    ("第二党支部（二工区）", "二工区会议室", "二工区隧道口值班楼"),
    ("第三党支部（三工区）", "三工区会议室", "三工区拌合站办公楼"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ("建国", "海燕", "志强", "丽华", "永红", "卫东", "秀英", "明", "静", "磊",
         "小军", "春梅", "国庆", "雪", "伟", "晓东", "红梅", "涛", "娟", "斌")
#: 40 members: mostly full members, some probationary, activists and mobile members.
CATEGORIES = ["full"] * 28 + ["probationary"] * 5 + ["activist"] * 4 + ["mobile"] * 3


def is_empty(session: Session) -> bool:
    return session.scalar(select(OrgUnit.id).limit(1)) is None


def seed(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Seed the demo organization; returns lines (demo logins) to print."""
    from accounts.service import create_user
    from org.service import create_member, create_org_unit, create_site
    from sessions.service import create_session

    now = now or utcnow()
    committee = create_org_unit(session, SYSTEM, name="远教示范公司党委", kind="committee")
    hq_site = create_site(session, SYSTEM, name="项目部会议室", org_unit_id=committee.id,
                          timezone=TZ, location="项目部办公楼三楼", capacity=60)
    branches, sites = [], []
    for name, room, location in BRANCHES:
        branch = create_org_unit(session, SYSTEM, name=name, kind="branch", parent_id=committee.id)
        branches.append(branch)
        sites.append(create_site(session, SYSTEM, name=room, org_unit_id=branch.id, timezone=TZ,
                                 location=location, capacity=40))
    sites.append(hq_site)

    members = []
    for i in range(40):
        branch = branches[i % 3]
        # Most members study at their branch's room; every eighth at the project office.
        site = hq_site if i % 8 == 7 else sites[i % 3]
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)]
        members.append(create_member(
            session, SYSTEM, name=name, member_no=f"YJ{2026000 + i + 1}", org_unit_id=branch.id,
            home_site_id=site.id, category=CATEGORIES[i], phone=f"1390000{i + 1:04d}"))

    def user(username: str, role: str, display_name: str, **scope):
        return create_user(session, username=username, password=DEMO_PASSWORD, role=role,
                           display_name=display_name, **scope)

    trainer = user("trainer", "trainer", "李讲师")
    user("organizer", "organizer", "党委组织员", org_unit_id=committee.id)
    for n, site in enumerate(sites, start=1):
        user(f"site{n}", "site_operator", f"{site.name}管理员", site_id=site.id)
    user("member1", "member", members[0].name, member_id=members[0].id)

    tz = ZoneInfo(TZ)
    monday = now.astimezone(tz).date() - dt.timedelta(days=now.astimezone(tz).weekday())
    all_sites = [s.id for s in sites]
    all_branches = [b.id for b in branches]
    create_session(session, SYSTEM, {
        "title": "党史学习讲座", "kind": "party_history_lecture", "trainer_id": trainer.id,
        "description": "每周三晚集中学习党史，各工区会议室同步收看。",
        "starts_at": dt.datetime.combine(monday, dt.time(19, 30), tz), "duration_minutes": 90,
        "timezone": TZ, "rrule": "FREQ=WEEKLY;BYDAY=WE", "site_ids": all_sites,
        "org_unit_ids": all_branches,
    }, now=now)
    create_session(session, SYSTEM, {
        "title": "主题党课", "kind": "party_lesson", "trainer_id": trainer.id,
        "description": "每月第一个星期五下午，党委书记讲党课。",
        "starts_at": dt.datetime.combine(monday, dt.time(15, 0), tz), "duration_minutes": 120,
        "timezone": TZ, "rrule": "FREQ=MONTHLY;BYDAY=1FR", "site_ids": all_sites,
        "org_unit_ids": [committee.id],
    }, now=now)
    session.flush()
    log.info("demo data seeded: %d members, %d sites", len(members), len(sites))
    lines = [
        f"trainer / {DEMO_PASSWORD} (讲师)",
        f"organizer / {DEMO_PASSWORD} (组织管理员：{committee.name})",
    ]
    lines += [f"site{n} / {DEMO_PASSWORD} (学习点管理员：{s.name})"
              for n, s in enumerate(sites, start=1)]
    lines.append(f"member1 / {DEMO_PASSWORD} (党员：{members[0].name})")
    return lines
