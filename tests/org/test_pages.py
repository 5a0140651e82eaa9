"""Management pages: each opens for admin, refuses members, and its forms change the data."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from accounts.models import User
from org.models import Member, OrgUnit, Site

PAGES = ["/org", "/org/sites", "/org/members", "/org/members/import", "/users"]


def login(app, user):
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["_user_id"] = user.get_id()
        sess["_fresh"] = True
    return client


@pytest.mark.parametrize("path", PAGES)
def test_pages_open_for_admin(app, org, path):
    r = login(app, org.admin).get(path)
    assert r.status_code == 200
    assert "<h1>" in r.get_data(as_text=True)


@pytest.mark.parametrize("path", PAGES)
def test_pages_refuse_a_member(app, org, path):
    r = login(app, org.member_user).get(path)
    assert r.status_code == 403


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_login(client, path):
    r = client.get(path)
    assert r.status_code == 302
    assert "/login" in r.headers["Location"]


def test_detail_pages_and_scope(app, org):
    admin = login(app, org.admin)
    assert admin.get(f"/org/sites/{org.site_b.id}").status_code == 200
    assert admin.get(f"/org/members/{org.member_b.id}").status_code == 200
    assert admin.get("/org/members/99999").status_code == 404
    organizer = login(app, org.organizer_a)
    assert organizer.get(f"/org/members/{org.member_b.id}").status_code == 403
    assert organizer.get(f"/org/sites/{org.site_b.id}").status_code == 403
    page = organizer.get("/org/members").get_data(as_text=True)
    assert "张三" in page
    assert "李四" not in page
    tree = organizer.get("/org").get_data(as_text=True)
    assert "第一支部" in tree
    assert "第二支部" not in tree
    operator = login(app, org.operator_a)
    assert operator.get("/org/sites").status_code == 200
    assert operator.get("/org/members").status_code == 200
    assert operator.get("/org").status_code == 403
    assert operator.get("/users").status_code == 403
    trainer = login(app, org.trainer)
    assert trainer.get("/org").status_code == 200
    assert trainer.get("/org/members").status_code == 403


def test_tree_forms(app, org, db_session):
    admin = login(app, org.admin)
    r = admin.post("/org/units", data={"name": "第三支部", "kind": "branch",
                                       "parent_id": str(org.committee.id)})
    assert r.status_code == 302
    unit = db_session.scalar(select(OrgUnit).where(OrgUnit.name == "第三支部"))
    assert unit.path == f"{org.committee.path}{unit.id}/"
    admin.post(f"/org/units/{org.group_a1.id}",
               data={"name": "改名小组", "kind": "group", "parent_id": str(unit.id)})
    db_session.expire_all()
    group = db_session.get(OrgUnit, org.group_a1.id)
    assert group.name == "改名小组"
    assert group.path == f"{unit.path}{group.id}/"
    # A refused change is a message on the page, not an error page.
    r = admin.post(f"/org/units/{org.branch_a.id}/delete", follow_redirects=True)
    assert r.status_code == 200
    assert "不能删除" in r.get_data(as_text=True)
    r = admin.post("/org/units", data={"name": "x", "kind": "branch", "parent_id": "abc"},
                   follow_redirects=True)
    assert r.status_code == 200
    assert "parent_id" in r.get_data(as_text=True)
    # An organizer posting into another branch gets a 403.
    r = login(app, org.organizer_a).post("/org/units", data={
        "name": "x", "kind": "group", "parent_id": str(org.branch_b.id)})
    assert r.status_code == 403


def test_site_forms_and_screen_token(app, org, db_session):
    admin = login(app, org.admin)
    admin.post("/org/sites", data={"name": "四号会议室", "org_unit_id": str(org.branch_a.id),
                                   "timezone": "Asia/Shanghai", "capacity": "40"})
    site = db_session.scalar(select(Site).where(Site.name == "四号会议室"))
    assert site.capacity == 40
    r = admin.post("/org/sites", data={"name": "x", "org_unit_id": str(org.branch_a.id),
                                       "timezone": "Moon/Base"}, follow_redirects=True)
    assert "未知时区" in r.get_data(as_text=True)
    admin.post(f"/org/sites/{site.id}", data={
        "name": "四号会议室", "org_unit_id": str(org.branch_a.id), "timezone": "Asia/Urumqi",
        "location": "北门", "capacity": "", "active": "1"})
    db_session.expire_all()
    site = db_session.get(Site, site.id)
    assert site.timezone == "Asia/Urumqi"
    assert site.capacity is None
    assert site.location == "北门"
    operator = login(app, org.operator_a)
    r = operator.post(f"/org/sites/{org.site_a.id}/screen-token")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'id="screen-token-value"' in html
    assert f"/screen/{org.site_a.id}?token=" in html
    assert operator.post(f"/org/sites/{org.site_b.id}/screen-token").status_code == 403
    r = operator.post(f"/org/sites/{org.site_a.id}/screen-tokens/revoke", follow_redirects=True)
    assert "1" in r.get_data(as_text=True)
    admin.post(f"/org/sites/{site.id}/deactivate")
    db_session.expire_all()
    assert db_session.get(Site, site.id).active is False


def test_member_forms(app, org, db_session):
    organizer = login(app, org.organizer_a)
    r = organizer.post("/org/members", data={
        "name": "王五", "member_no": "A002", "org_unit_id": str(org.branch_a.id),
        "home_site_id": str(org.site_a.id), "category": "probationary", "phone": "138"})
    assert r.status_code == 302
    member = db_session.scalar(select(Member).where(Member.member_no == "A002"))
    assert member.category == "probationary"
    r = organizer.post("/org/members", data={
        "name": "重号", "member_no": "A002", "org_unit_id": str(org.branch_a.id)},
        follow_redirects=True)
    assert "党员编号已存在" in r.get_data(as_text=True)
    organizer.post(f"/org/members/{member.id}", data={
        "name": "王五", "member_no": "A002", "org_unit_id": str(org.group_a1.id),
        "home_site_id": "", "category": "full", "phone": "139", "status": "active"})
    organizer.post(f"/org/members/{org.member_a.id}/transfer")
    db_session.expire_all()
    member = db_session.get(Member, member.id)
    assert member.org_unit_id == org.group_a1.id
    assert member.home_site_id is None
    assert db_session.get(Member, org.member_a.id).status == "transferred"
    listing = organizer.get("/org/members?q=王").get_data(as_text=True)
    assert "王五" in listing
    assert "张三" not in listing
    transferred = organizer.get("/org/members?status=transferred").get_data(as_text=True)
    assert "张三" in transferred
    assert organizer.post(f"/org/members/{org.member_b.id}/transfer").status_code == 403
    assert login(app, org.operator_a).post(f"/org/members/{org.member_a.id}",
                                           data={"name": "x"}).status_code == 403


def test_import_preview_then_confirm(app, org, db_session):
    admin = login(app, org.admin)
    content = ("姓名,党员编号,所在支部,学习点,类别,手机\r\n"
               "王五,A002,第一支部,一号会议室,预备党员,\r\n"
               "张三,A001,第一支部,,入党积极分子,\r\n").encode("gbk")
    r = admin.post("/org/members/import", content_type="multipart/form-data",
                   data={"file": (io.BytesIO(content), "名册.csv")})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'id="import-preview"' in html
    assert "A002" in html
    assert 'name="ticket"' in html
    assert db_session.scalar(select(Member).where(Member.member_no == "A002")) is None
    # Changes are shown in the roster's words, not as ids and enum values.
    assert "<del>正式党员</del>" in html
    assert "<ins>入党积极分子</ins>" in html
    ticket = html.split('name="ticket" value="', 1)[1].split('"', 1)[0]
    r = admin.post("/org/members/import/confirm", data={"ticket": ticket})
    assert r.status_code == 302
    assert db_session.scalar(select(Member).where(Member.member_no == "A002")) is not None
    db_session.expire_all()
    assert db_session.get(Member, org.member_a.id).category == "activist"
    # The ticket is used up.
    r = admin.post("/org/members/import/confirm", data={"ticket": ticket},
                   follow_redirects=True)
    assert "过期" in r.get_data(as_text=True)


def test_import_page_shows_bad_rows(app, org, db_session):
    admin = login(app, org.admin)
    content = "name,member_no,org_unit\r\n,A010,第一支部\r\n赵六,A011,第九支部\r\n".encode()
    r = admin.post("/org/members/import", content_type="multipart/form-data",
                   data={"file": (io.BytesIO(content), "m.csv")})
    assert r.status_code == 422
    html = r.get_data(as_text=True)
    assert 'id="import-errors"' in html
    assert "第九支部" in html
    assert "姓名为空" in html
    r = admin.post("/org/members/import", content_type="multipart/form-data",
                   data={"file": (io.BytesIO(b"\x89PNG\0\0"), "logo.png")})
    assert r.status_code == 400
    r = admin.post("/org/members/import", content_type="multipart/form-data", data={})
    assert r.status_code == 400


def test_user_forms(app, org, db_session):
    organizer = login(app, org.organizer_a)
    r = organizer.post("/users", data={"username": "op_a2", "password": "branch-pass-2026",
                                       "role": "site_operator", "site_id": str(org.site_a.id),
                                       "display_name": "二号管理员"})
    assert r.status_code == 302
    created = db_session.scalar(select(User).where(User.username == "op_a2"))
    assert created.site_id == org.site_a.id
    organizer.post("/users", data={"username": "wangwu", "password": "branch-pass-2026",
                                   "role": "member", "member_no": "A001"})
    assert db_session.scalar(select(User).where(User.username == "wangwu")).member_id \
        == org.member_a.id
    r = organizer.post("/users", data={"username": "op_b2", "password": "branch-pass-2026",
                                       "role": "site_operator", "site_id": str(org.site_b.id)})
    assert r.status_code == 403
    r = organizer.post("/users", data={"username": "boss", "password": "branch-pass-2026",
                                       "role": "admin"})
    assert r.status_code == 403
    r = organizer.post("/users", data={"username": "short", "password": "123",
                                       "role": "member", "member_no": "A001"},
                       follow_redirects=True)
    assert "密码至少" in r.get_data(as_text=True)
    organizer.post(f"/users/{created.id}/active", data={"active": "0"})
    organizer.post(f"/users/{created.id}/password", data={"password": "new-password-1"})
    db_session.expire_all()
    created = db_session.get(User, created.id)
    assert created.active is False
    from werkzeug.security import check_password_hash

    assert check_password_hash(created.password_hash, "new-password-1")
    assert organizer.post(f"/users/{org.trainer.id}/active",
                          data={"active": "0"}).status_code == 403
    listing = organizer.get("/users").get_data(as_text=True)
    assert "op_a2" in listing
    assert "trainer" not in listing


def test_pages_render_in_english(app, org):
    r = login(app, org.admin).get("/org/members?lang=en")
    assert r.status_code == 200
