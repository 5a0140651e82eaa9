"""Org service rules, called without HTTP: the tree's paths, moves, cycles, roster, scope."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from accounts import service as accounts_service
from core.errors import Conflict, Forbidden, NotFound, ValidationError
from core.principals import SYSTEM
from org import service
from org.models import Member, OrgUnit


def test_paths_follow_the_tree(db_session, org):
    assert org.committee.path == f"/{org.committee.id}/"
    assert org.branch_a.path == f"/{org.committee.id}/{org.branch_a.id}/"
    assert org.group_a1.path == f"{org.branch_a.path}{org.group_a1.id}/"


def test_move_rewrites_the_whole_subtree(db_session, org):
    leaf = service.create_org_unit(db_session, SYSTEM, name="组内", kind="group",
                                   parent_id=org.branch_a.id)
    general = service.create_org_unit(db_session, SYSTEM, name="总支", kind="general_branch",
                                      parent_id=org.committee.id)
    service.move_org_unit(db_session, SYSTEM, org.branch_a.id, general.id)
    db_session.commit()
    db_session.expire_all()
    a = db_session.get(OrgUnit, org.branch_a.id)
    assert a.parent_id == general.id
    assert a.path == f"{general.path}{a.id}/"
    assert db_session.get(OrgUnit, org.group_a1.id).path == f"{a.path}{org.group_a1.id}/"
    assert db_session.get(OrgUnit, leaf.id).path == f"{a.path}{leaf.id}/"
    # Units outside the moved subtree are untouched.
    assert db_session.get(OrgUnit, org.branch_b.id).path == \
        f"/{org.committee.id}/{org.branch_b.id}/"
    # The subtree query used for scope now finds the moved units under the general branch.
    from accounts.service import subtree_ids

    assert set(subtree_ids(db_session, general.id)) == {general.id, a.id, org.group_a1.id,
                                                        leaf.id}


def test_move_under_own_descendant_is_a_cycle(db_session, org):
    with pytest.raises(ValidationError) as exc:
        service.move_org_unit(db_session, SYSTEM, org.committee.id, org.branch_a.id)
    assert exc.value.code == "cycle"
    assert exc.value.details["field"] == "parent_id"
    with pytest.raises(ValidationError):
        service.move_org_unit(db_session, SYSTEM, org.branch_a.id, org.branch_a.id)


def test_kind_placement_rules(db_session, org):
    with pytest.raises(ValidationError) as exc:
        service.create_org_unit(db_session, SYSTEM, name="孤组", kind="group")
    assert exc.value.details["field"] == "parent_id"
    with pytest.raises(ValidationError):
        service.create_org_unit(db_session, SYSTEM, name="x", kind="committee",
                                parent_id=org.branch_a.id)
    with pytest.raises(ValidationError) as exc:
        service.create_org_unit(db_session, SYSTEM, name="x", kind="division")
    assert exc.value.details["field"] == "kind"
    # A committee may sit under a higher committee; a branch directly under a committee.
    sub = service.create_org_unit(db_session, SYSTEM, name="分党委", kind="committee",
                                  parent_id=org.committee.id)
    assert sub.parent_id == org.committee.id
    # Changing a kind must still fit the parent and the children.
    with pytest.raises(ValidationError):
        service.update_org_unit(db_session, SYSTEM, org.branch_a.id, kind="committee")


def test_sibling_names_are_unique(db_session, org):
    with pytest.raises(Conflict):
        service.create_org_unit(db_session, SYSTEM, name="第一支部", kind="branch",
                                parent_id=org.committee.id)


def test_delete_refuses_a_unit_in_use(db_session, org):
    with pytest.raises(Conflict) as exc:
        service.delete_org_unit(db_session, SYSTEM, org.branch_a.id)
    assert "下级组织" in exc.value.message
    assert "学习点" in exc.value.message
    # ...and the organizer scoped to it is named too (found through the metadata).
    assert exc.value.details == {"children": 1, "sites": 1, "members": 1, "users": 1}
    assert "用户" in exc.value.message
    # A unit referenced by a user (an organizer's scope) is refused too.
    with pytest.raises(Conflict) as exc:
        service.delete_org_unit(db_session, SYSTEM, org.committee.id)
    empty = service.create_org_unit(db_session, SYSTEM, name="空支部", kind="branch",
                                    parent_id=org.committee.id)
    service.delete_org_unit(db_session, SYSTEM, empty.id)
    assert db_session.get(OrgUnit, empty.id) is None


def test_unknown_ids(db_session, org):
    with pytest.raises(NotFound):
        service.get_org_unit(db_session, SYSTEM, 9999)
    with pytest.raises(ValidationError) as exc:
        service.create_org_unit(db_session, SYSTEM, name="x", kind="branch", parent_id=9999)
    assert exc.value.details["field"] == "parent_id"
    with pytest.raises(ValidationError) as exc:
        service.create_member(db_session, SYSTEM, name="x", member_no="X1", org_unit_id=9999)
    assert exc.value.details["field"] == "org_unit_id"


def test_site_validation(db_session, org):
    site = service.create_site(db_session, SYSTEM, name="默认", org_unit_id=org.branch_a.id)
    assert site.timezone == "Asia/Shanghai"
    assert site.active
    with pytest.raises(ValidationError) as exc:
        service.create_site(db_session, SYSTEM, name="x", org_unit_id=org.branch_a.id,
                            timezone="China Standard Time")
    assert exc.value.details["field"] == "timezone"
    with pytest.raises(ValidationError) as exc:
        service.create_site(db_session, SYSTEM, name="x", org_unit_id=org.branch_a.id,
                            capacity=-1)
    assert exc.value.details["field"] == "capacity"
    service.deactivate_site(db_session, SYSTEM, site.id)
    assert site.active is False


def test_member_no_unique_and_transfer(db_session, org):
    with pytest.raises(Conflict):
        service.create_member(db_session, SYSTEM, name="重号", member_no="A001",
                              org_unit_id=org.branch_a.id)
    with pytest.raises(Conflict):
        service.update_member(db_session, SYSTEM, org.member_b.id, member_no="A001")
    with pytest.raises(ValidationError) as exc:
        service.create_member(db_session, SYSTEM, name="x", member_no="X2",
                              org_unit_id=org.branch_a.id, category="honorary")
    assert exc.value.details["field"] == "category"
    service.transfer_member(db_session, SYSTEM, org.member_a.id)
    assert org.member_a.status == "transferred"


def test_member_filters(db_session, org):
    def names(**kw):
        return [m.name for m in db_session.scalars(service.members_query(db_session, SYSTEM, **kw))]

    assert names(org_unit_id=org.committee.id) == ["张三", "李四"]  # subtree
    assert names(org_unit_id=org.branch_b.id) == ["李四"]
    assert names(site_id=org.site_a.id) == ["张三"]
    assert names(category="probationary") == ["李四"]
    assert names(q="a00") == ["张三"]  # member number, case-insensitive
    assert names(q="%") == []  # LIKE wildcards are escaped
    service.transfer_member(db_session, SYSTEM, org.member_a.id)
    assert names(status="active") == ["李四"]


def test_organizer_writes_only_in_his_subtree(db_session, org):
    actor = org.organizer_a
    unit = service.create_org_unit(db_session, actor, name="第二小组", kind="group",
                                   parent_id=org.branch_a.id)
    assert unit.path.startswith(org.branch_a.path)
    with pytest.raises(Forbidden):
        service.create_org_unit(db_session, actor, name="x", kind="group",
                                parent_id=org.branch_b.id)
    with pytest.raises(Forbidden):
        service.create_org_unit(db_session, actor, name="顶层", kind="committee")
    with pytest.raises(Forbidden):
        service.create_site(db_session, actor, name="x", org_unit_id=org.branch_b.id)
    with pytest.raises(Forbidden):
        service.create_member(db_session, actor, name="x", member_no="X3",
                              org_unit_id=org.branch_b.id)
    with pytest.raises(Forbidden):  # moving a member out of his scope
        service.update_member(db_session, actor, org.member_a.id, org_unit_id=org.branch_b.id)
    with pytest.raises(Forbidden):  # moving his own root elsewhere
        service.move_org_unit(db_session, actor, org.branch_a.id, org.branch_b.id)
    with pytest.raises(Forbidden):
        service.delete_org_unit(db_session, actor, org.branch_a.id)
    # The committee's organizer can move a branch between his units.
    service.move_org_unit(db_session, org.organizer_top, org.group_a1.id, org.branch_b.id)
    assert org.group_a1.path.startswith(org.branch_b.path)


def test_readers_cannot_write(db_session, org):
    for actor in (org.trainer, org.operator_a, org.member_user):
        with pytest.raises(Forbidden):
            service.create_site(db_session, actor, name="x", org_unit_id=org.branch_a.id)
        with pytest.raises(Forbidden):
            service.update_member(db_session, actor, org.member_a.id, phone="1")


def test_screen_tokens(db_session, org):
    from accounts.service import token_lookup

    site, token = service.issue_screen_token(db_session, org.operator_a, org.site_a.id)
    assert token_lookup(db_session, token).site_id == site.id
    with pytest.raises(Forbidden):
        service.issue_screen_token(db_session, org.operator_a, org.site_b.id)
    with pytest.raises(Forbidden):
        service.issue_screen_token(db_session, org.trainer, org.site_a.id)
    assert service.revoke_screen_tokens(db_session, org.organizer_a, org.site_a.id) == 1
    assert token_lookup(db_session, token) is None


def test_users_created_by_an_organizer(db_session, org):
    user = accounts_service.create_user_for(db_session, org.organizer_a, username="op_a2",
                                   password="branch-pass-2026", role="site_operator",
                                   site_id=org.site_a.id)
    assert user.site_id == org.site_a.id
    with pytest.raises(Forbidden):
        accounts_service.create_user_for(db_session, org.organizer_a, username="op_b2",
                                password="branch-pass-2026", role="site_operator",
                                site_id=org.site_b.id)
    with pytest.raises(Forbidden):
        accounts_service.create_user_for(db_session, org.organizer_a, username="boss2",
                                password="branch-pass-2026", role="admin")
    with pytest.raises(Forbidden):
        accounts_service.create_user_for(db_session, org.organizer_a, username="org2",
                                password="branch-pass-2026", role="organizer",
                                org_unit_id=org.branch_a.id)
    accounts_service.set_user_active(db_session, org.organizer_a, user.id, False)
    assert user.active is False
    with pytest.raises(Forbidden):  # a user of another branch
        accounts_service.set_user_active(db_session, org.organizer_a, org.trainer.id, False)


def test_system_actions_have_no_scope(db_session, org):
    member = service.create_member(db_session, SYSTEM, name="系统", member_no="S1",
                                   org_unit_id=org.branch_b.id, phone=" 138 ")
    assert member.phone == "138"
    assert db_session.scalar(select(Member.id).where(Member.member_no == "S1")) == member.id
