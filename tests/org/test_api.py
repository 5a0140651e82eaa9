"""The org API contract: bodies, status codes, validation, pagination."""

from __future__ import annotations

import json

from org.models import Member, OrgUnit, Site


def test_create_org_unit_contract(client, org):
    r = client.post("/api/v1/org-units", headers=org.h["admin"],
                    json={"name": "第三支部", "kind": "branch", "parent_id": org.committee.id})
    assert r.status_code == 201
    body = r.get_json()
    assert {"id", "name", "kind", "parent_id", "path"} <= body.keys()
    assert body["kind"] == "branch"
    assert body["parent_id"] == org.committee.id
    assert body["path"] == f"{org.committee.path}{body['id']}/"
    root = client.post("/api/v1/org-units", headers=org.h["admin"],
                       json={"name": "新党委", "kind": "committee", "parent_id": None})
    assert root.status_code == 201
    assert root.get_json()["parent_id"] is None


def test_org_unit_list_get_patch_delete(client, org, db_session):
    h = org.h["admin"]
    r = client.get("/api/v1/org-units?page_size=2", headers=h)
    assert r.status_code == 200
    assert len(r.get_json()) == 2
    assert json.loads(r.headers["X-Pagination"])["total"] == 4
    assert client.get(f"/api/v1/org-units?parent_id={org.committee.id}",
                      headers=h).get_json()[0]["name"] == "第一支部"
    assert client.get(f"/api/v1/org-units/{org.branch_a.id}", headers=h).get_json()["name"] \
        == "第一支部"
    moved = client.patch(f"/api/v1/org-units/{org.group_a1.id}", headers=h,
                         json={"parent_id": org.branch_b.id, "name": "二组"})
    assert moved.status_code == 200
    assert moved.get_json()["path"] == f"{org.branch_b.path}{org.group_a1.id}/"
    assert moved.get_json()["name"] == "二组"
    cycle = client.patch(f"/api/v1/org-units/{org.committee.id}", headers=h,
                         json={"parent_id": org.branch_a.id})
    assert cycle.status_code == 422
    assert cycle.get_json()["details"]["field"] == "parent_id"
    busy = client.delete(f"/api/v1/org-units/{org.branch_b.id}", headers=h)
    assert busy.status_code == 409
    assert "不能删除" in busy.get_json()["message"]
    group_id = org.group_a1.id
    assert client.delete(f"/api/v1/org-units/{group_id}", headers=h).status_code == 204
    db_session.expire_all()
    assert db_session.get(OrgUnit, group_id) is None
    assert client.get(f"/api/v1/org-units/{group_id}", headers=h).status_code == 404


def test_org_unit_bad_input_names_the_field(client, org):
    h = org.h["admin"]
    for body, field in (
        ({"name": "x", "kind": "division", "parent_id": None}, "kind"),
        ({"kind": "branch", "parent_id": org.committee.id}, "name"),
        ({"name": "x", "kind": "branch", "parent_id": "one"}, "parent_id"),
        ({"name": "x", "kind": "branch", "parent_id": 99999}, "parent_id"),
        ({"name": "x", "kind": "group", "parent_id": None}, "parent_id"),
    ):
        r = client.post("/api/v1/org-units", headers=h, json=body)
        assert r.status_code == 422, body
        assert r.get_json()["details"]["field"] == field, body
    assert client.get("/api/v1/org-units/99999", headers=h).status_code == 404
    assert client.post("/api/v1/org-units", headers=h, data="not json",
                       content_type="application/json").status_code in (400, 422)


def test_site_contract(client, org, db_session):
    h = org.h["admin"]
    r = client.post("/api/v1/sites", headers=h,
                    json={"name": "三号工地", "org_unit_id": org.branch_a.id,
                          "timezone": "Asia/Shanghai"})
    assert r.status_code == 201
    body = r.get_json()
    assert body["id"]
    assert body["timezone"] == "Asia/Shanghai"
    assert body["active"] is True
    assert body["capacity"] is None
    assert body["location"] == ""
    full = client.post("/api/v1/sites", headers=h,
                       json={"name": "海外项目部", "org_unit_id": org.branch_b.id,
                             "timezone": "Africa/Nairobi", "location": "内罗毕",
                             "capacity": 12}).get_json()
    assert full["capacity"] == 12
    assert full["location"] == "内罗毕"
    for body, field in (
        ({"name": "x", "org_unit_id": org.branch_a.id, "timezone": "Nowhere/City"}, "timezone"),
        ({"name": "x", "org_unit_id": org.branch_a.id, "capacity": -3}, "capacity"),
        ({"name": "x"}, "org_unit_id"),
        ({"name": "x", "org_unit_id": 4242}, "org_unit_id"),
    ):
        bad = client.post("/api/v1/sites", headers=h, json=body)
        assert bad.status_code == 422, body
        assert bad.get_json()["details"]["field"] == field
    listing = client.get(f"/api/v1/sites?org_unit_id={org.committee.id}", headers=h)
    assert len(listing.get_json()) == 4  # the committee's subtree
    patched = client.patch(f"/api/v1/sites/{body and full['id']}", headers=h,
                           json={"capacity": 20, "timezone": "Asia/Dubai"})
    assert patched.get_json()["capacity"] == 20
    gone = client.delete(f"/api/v1/sites/{full['id']}", headers=h)
    assert gone.status_code == 200
    assert gone.get_json()["active"] is False
    assert len(client.get("/api/v1/sites?active=true", headers=h).get_json()) == 3
    assert db_session.get(Site, full["id"]) is not None  # kept for history


def test_screen_tokens_api(client, org):
    r = client.post(f"/api/v1/sites/{org.site_a.id}/screen-tokens", headers=org.h["operator_a"])
    assert r.status_code == 201
    body = r.get_json()
    assert body["token"]
    assert f"/screen/{org.site_a.id}?token=" in body["screen_url_hint"]
    assert body["token"] in body["screen_url_hint"]
    screen = {"Authorization": f"Bearer {body['token']}"}
    # A screen token is not a management credential.
    assert client.get("/api/v1/members", headers=screen).status_code == 403
    assert client.post("/api/v1/sites", headers=screen,
                       json={"name": "x", "org_unit_id": org.branch_a.id}).status_code == 403
    assert client.post(f"/api/v1/sites/{org.site_a.id}/screen-tokens",
                       headers=screen).status_code == 403
    revoked = client.delete(f"/api/v1/sites/{org.site_a.id}/screen-tokens",
                            headers=org.h["organizer_a"])
    assert revoked.status_code == 200
    assert revoked.get_json() == {"revoked": 1}
    assert client.get("/api/v1/org-units", headers=screen).status_code == 401
    # Operators of another site, trainers and members may not issue them.
    for who in ("trainer", "member_user"):
        assert client.post(f"/api/v1/sites/{org.site_a.id}/screen-tokens",
                           headers=org.h[who]).status_code == 403
    assert client.post(f"/api/v1/sites/{org.site_b.id}/screen-tokens",
                       headers=org.h["operator_a"]).status_code == 403


def test_member_contract(client, org, db_session):
    h = org.h["admin"]
    r = client.post("/api/v1/members", headers=h, json={
        "name": "王五", "member_no": "A002", "org_unit_id": org.branch_a.id,
        "home_site_id": org.site_a.id, "category": "activist"})
    assert r.status_code == 201
    body = r.get_json()
    assert body["id"]
    assert body["category"] == "activist"
    assert body["status"] == "active"
    assert body["home_site_id"] == org.site_a.id
    assert body["phone"] == ""
    dup = client.post("/api/v1/members", headers=h, json={
        "name": "重号", "member_no": "A002", "org_unit_id": org.branch_a.id,
        "home_site_id": None, "category": "full"})
    assert dup.status_code == 409
    assert dup.get_json()["details"]["field"] == "member_no"
    for body_, field in (
        ({"name": "x", "member_no": "Z", "org_unit_id": org.branch_a.id,
          "category": "vip"}, "category"),
        ({"name": "x", "member_no": "Z", "org_unit_id": org.branch_a.id,
          "home_site_id": 777}, "home_site_id"),
        ({"name": "x", "member_no": "Z", "org_unit_id": [1]}, "org_unit_id"),
        ({"member_no": "Z", "org_unit_id": org.branch_a.id}, "name"),
    ):
        bad = client.post("/api/v1/members", headers=h, json=body_)
        assert bad.status_code == 422, body_
        assert bad.get_json()["details"]["field"] == field
    transferred = client.patch(f"/api/v1/members/{body['id']}", headers=h,
                               json={"status": "transferred", "phone": "13800138000"})
    assert transferred.status_code == 200
    assert transferred.get_json()["status"] == "transferred"
    db_session.expire_all()
    assert db_session.get(Member, body["id"]).phone == "13800138000"
    assert client.get("/api/v1/members/424242", headers=h).status_code == 404
    assert client.delete(f"/api/v1/members/{body['id']}", headers=h).status_code == 405


def test_member_list_filters(client, org):
    h = org.h["admin"]

    def nos(query: str) -> list[str]:
        r = client.get("/api/v1/members" + query, headers=h)
        assert r.status_code == 200, r.get_json()
        return [m["member_no"] for m in r.get_json()]

    assert nos("") == ["A001", "B001"]
    assert nos(f"?org_unit_id={org.committee.id}") == ["A001", "B001"]
    assert nos(f"?org_unit_id={org.branch_a.id}") == ["A001"]
    assert nos(f"?site_id={org.site_b.id}") == ["B001"]
    assert nos("?category=probationary") == ["B001"]
    assert nos("?status=transferred") == []
    assert nos("?q=张") == ["A001"]
    bad = client.get("/api/v1/members?category=vip", headers=h)
    assert bad.status_code == 422
    assert bad.get_json()["details"]["field"] == "category"
    assert client.get("/api/v1/members?org_unit_id=x", headers=h).status_code == 422


def test_openapi_lists_the_org_paths(client):
    spec = client.get("/api/openapi.json").get_json()
    for path in ("/api/v1/org-units", "/api/v1/org-units/{org_unit_id}", "/api/v1/sites",
                 "/api/v1/sites/{site_id}/screen-tokens", "/api/v1/members",
                 "/api/v1/members/{member_id}", "/api/v1/members/import"):
        assert path in spec["paths"], path
    upload = spec["paths"]["/api/v1/members/import"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
