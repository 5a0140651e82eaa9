"""Role and scope denials through the API, one test per role."""

from __future__ import annotations


def ids(response) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [row["id"] for row in response.get_json()]


def test_no_token_is_401(client, org):
    for path in ("/api/v1/org-units", "/api/v1/sites", "/api/v1/members",
                 f"/api/v1/members/{org.member_a.id}"):
        r = client.get(path)
        assert r.status_code == 401
        assert r.get_json()["error"] == "login_required"
    assert client.post("/api/v1/members", json={}).status_code == 401
    bad = client.get("/api/v1/sites", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401


def test_admin_sees_and_changes_everything(client, org):
    h = org.h["admin"]
    assert len(ids(client.get("/api/v1/org-units", headers=h))) == 4
    assert len(ids(client.get("/api/v1/sites", headers=h))) == 2
    assert len(ids(client.get("/api/v1/members", headers=h))) == 2
    assert client.patch(f"/api/v1/members/{org.member_b.id}", headers=h,
                        json={"phone": "1"}).status_code == 200
    assert client.patch(f"/api/v1/sites/{org.site_b.id}", headers=h,
                        json={"location": "北区"}).status_code == 200


def test_organizer_of_branch_a_cannot_touch_branch_b(client, org):
    h = org.h["organizer_a"]
    assert set(ids(client.get("/api/v1/org-units", headers=h))) == {org.branch_a.id,
                                                                    org.group_a1.id}
    assert ids(client.get("/api/v1/sites", headers=h)) == [org.site_a.id]
    assert ids(client.get("/api/v1/members", headers=h)) == [org.member_a.id]
    # Filtering by the other branch shows nothing of it.
    assert ids(client.get(f"/api/v1/members?org_unit_id={org.branch_b.id}", headers=h)) == []
    for method, path, body in (
        ("get", f"/api/v1/members/{org.member_b.id}", None),
        ("patch", f"/api/v1/members/{org.member_b.id}", {"phone": "1"}),
        ("get", f"/api/v1/sites/{org.site_b.id}", None),
        ("patch", f"/api/v1/sites/{org.site_b.id}", {"name": "x"}),
        ("delete", f"/api/v1/sites/{org.site_b.id}", None),
        ("get", f"/api/v1/org-units/{org.branch_b.id}", None),
        ("patch", f"/api/v1/org-units/{org.branch_b.id}", {"name": "x"}),
        ("post", "/api/v1/members", {"name": "x", "member_no": "X9",
                                     "org_unit_id": org.branch_b.id}),
        ("post", "/api/v1/sites", {"name": "x", "org_unit_id": org.branch_b.id}),
        ("post", "/api/v1/org-units", {"name": "x", "kind": "group",
                                       "parent_id": org.branch_b.id}),
        ("patch", f"/api/v1/members/{org.member_a.id}", {"org_unit_id": org.branch_b.id}),
        ("post", f"/api/v1/sites/{org.site_b.id}/screen-tokens", None),
    ):
        r = getattr(client, method)(path, headers=h, json=body)
        assert r.status_code == 403, (method, path, r.get_json())
        assert r.get_json()["error"] == "forbidden"
    # Inside his own subtree he may write.
    assert client.patch(f"/api/v1/members/{org.member_a.id}", headers=h,
                        json={"phone": "2"}).status_code == 200
    assert client.post("/api/v1/members", headers=h, json={
        "name": "新人", "member_no": "A100", "org_unit_id": org.group_a1.id}).status_code == 201


def test_site_operator_sees_only_his_site_and_its_members(client, org):
    h = org.h["operator_a"]
    assert ids(client.get("/api/v1/sites", headers=h)) == [org.site_a.id]
    assert ids(client.get("/api/v1/members", headers=h)) == [org.member_a.id]
    assert ids(client.get("/api/v1/org-units", headers=h)) == [org.branch_a.id]
    assert client.get(f"/api/v1/sites/{org.site_b.id}", headers=h).status_code == 403
    assert client.get(f"/api/v1/members/{org.member_b.id}", headers=h).status_code == 403
    assert client.get(f"/api/v1/members/{org.member_a.id}", headers=h).status_code == 200
    assert client.patch(f"/api/v1/members/{org.member_a.id}", headers=h,
                        json={"phone": "1"}).status_code == 403
    assert client.patch(f"/api/v1/sites/{org.site_a.id}", headers=h,
                        json={"name": "x"}).status_code == 403


def test_trainer_reads_units_and_sites_but_not_members(client, org):
    h = org.h["trainer"]
    assert len(ids(client.get("/api/v1/org-units", headers=h))) == 4
    assert len(ids(client.get("/api/v1/sites", headers=h))) == 2
    assert client.get(f"/api/v1/sites/{org.site_b.id}", headers=h).status_code == 200
    assert client.get("/api/v1/members", headers=h).status_code == 403
    assert client.get(f"/api/v1/members/{org.member_a.id}", headers=h).status_code == 403
    assert client.post("/api/v1/org-units", headers=h, json={
        "name": "x", "kind": "group", "parent_id": org.branch_a.id}).status_code == 403
    assert client.post("/api/v1/sites", headers=h, json={
        "name": "x", "org_unit_id": org.branch_a.id}).status_code == 403
    assert client.delete(f"/api/v1/org-units/{org.group_a1.id}", headers=h).status_code == 403


def test_member_sees_only_himself(client, org):
    h = org.h["member_user"]
    assert ids(client.get("/api/v1/members", headers=h)) == [org.member_a.id]
    assert client.get(f"/api/v1/members/{org.member_a.id}", headers=h).status_code == 200
    assert client.get(f"/api/v1/members/{org.member_b.id}", headers=h).status_code == 403
    assert client.patch(f"/api/v1/members/{org.member_a.id}", headers=h,
                        json={"category": "full"}).status_code == 403
    assert client.get("/api/v1/org-units", headers=h).status_code == 403
    assert ids(client.get("/api/v1/sites", headers=h)) == [org.site_a.id]  # his home site
    assert client.get(f"/api/v1/sites/{org.site_b.id}", headers=h).status_code == 403
    r = client.post("/api/v1/members/import", headers=h, content_type="multipart/form-data",
                    data={"file": (__import__("io").BytesIO(b"name,member_no,org_unit\n"),
                                   "m.csv")})
    assert r.status_code == 403
