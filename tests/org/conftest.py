"""Org fixtures: a committee with two branches, a site and a member in each, one user per role."""

from __future__ import annotations

import pytest

from core.principals import SYSTEM
from org import service


class OrgTree:
    """The organization the org tests work in (ids, rows and auth headers)."""


@pytest.fixture
def org(db_session, factory) -> OrgTree:
    """Committee → branch A (site A, member A, group A1) and branch B (site B, member B)."""
    t = OrgTree()
    t.committee = service.create_org_unit(db_session, SYSTEM, name="机关党委", kind="committee")
    t.branch_a = service.create_org_unit(db_session, SYSTEM, name="第一支部", kind="branch",
                                         parent_id=t.committee.id)
    t.branch_b = service.create_org_unit(db_session, SYSTEM, name="第二支部", kind="branch",
                                         parent_id=t.committee.id)
    t.group_a1 = service.create_org_unit(db_session, SYSTEM, name="第一小组", kind="group",
                                         parent_id=t.branch_a.id)
    t.site_a = service.create_site(db_session, SYSTEM, name="一号会议室", org_unit_id=t.branch_a.id)
    t.site_b = service.create_site(db_session, SYSTEM, name="二号会议室", org_unit_id=t.branch_b.id,
                                   timezone="Asia/Urumqi", capacity=30)
    t.member_a = service.create_member(db_session, SYSTEM, name="张三", member_no="A001",
                                       org_unit_id=t.branch_a.id, home_site_id=t.site_a.id)
    t.member_b = service.create_member(db_session, SYSTEM, name="李四", member_no="B001",
                                       org_unit_id=t.branch_b.id, home_site_id=t.site_b.id,
                                       category="probationary")
    t.admin = factory.user("admin", username="admin")
    t.organizer_a = factory.user("organizer", username="org_a", org_unit_id=t.branch_a.id)
    t.organizer_top = factory.user("organizer", username="org_top", org_unit_id=t.committee.id)
    t.operator_a = factory.user("site_operator", username="op_a", site_id=t.site_a.id)
    t.trainer = factory.user("trainer", username="trainer")
    t.member_user = factory.user("member", username="zhangsan", member_id=t.member_a.id)
    db_session.commit()
    t.h = {name: factory.headers(getattr(t, name)) for name in (
        "admin", "organizer_a", "organizer_top", "operator_a", "trainer", "member_user")}
    return t
