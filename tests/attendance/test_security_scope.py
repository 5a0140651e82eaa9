"""Security, scopes (issue 10, finding 3): a site's walk-in check-in of another
organization's member is refused exactly like an unknown id, naming no one."""

from __future__ import annotations

import pytest

from tests.attendance.conftest import emit


def _mark(att_socket, who, scene, member_id, event_id):
    return emit(att_socket(who), "roll_call:mark", {
        "occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id,
        "member_ids": [member_id], "state": "present", "event_id": event_id})


def test_walk_in_of_another_organizations_member_is_refused_without_the_name(
        att_socket, scene, factory, db_session):
    own_walk_in = factory.member(scene.unit, scene.site_b, "本支部来客")
    db_session.commit()
    for who in ("screen_a", "operator_a"):
        refused = _mark(att_socket, who, scene, scene.outsider.id, f"{who}-1")
        unknown = _mark(att_socket, who, scene, 999_999, f"{who}-2")
        assert refused["ok"] is False
        assert refused["error"] == unknown["error"] == "not_found"
        assert "外人" not in str(refused)
        assert refused["message"].replace(str(scene.outsider.id), "#") == \
            unknown["message"].replace("999999", "#")
    # Expected members and walk-ins of the site's own organization still check in.
    assert _mark(att_socket, "screen_a", scene, scene.members[0].id, "ok-1")["ok"] is True
    assert _mark(att_socket, "screen_a", scene, own_walk_in.id, "ok-2")["ok"] is True


def test_api_walk_in_is_refused_the_same_way(client, scene):
    url = f"/api/v1/occurrences/{scene.occurrence.id}/attendance-events"
    body = {"event_id": "w1", "type": "check_in", "member_id": scene.outsider.id,
            "site_id": scene.site_a.id}
    refused = client.post(url, json=body, headers=scene.headers("operator_a"))
    assert refused.status_code == 404
    assert "外人" not in refused.get_data(as_text=True)
    # An admin (who manages the occurrence) is not limited.
    allowed = client.post(url, json={**body, "event_id": "w2"}, headers=scene.headers("admin"))
    assert allowed.status_code == 201


@pytest.fixture
def joint(scene, db_session):
    """A joint occurrence aimed at both branches: site A of the first, the other's site."""
    from tests.attendance.conftest import make_session

    _, occ = make_session(db_session, title="联合学习", start=scene.occurrence.starts_at,
                          minutes=60, sites=[scene.site_a, scene.foreign_site],
                          units=[scene.unit, scene.other_unit])
    db_session.commit()
    return occ


def test_joint_occurrence_organizer_sees_and_exports_only_his_subtree(client, scene, joint):
    base = f"/api/v1/occurrences/{joint.id}/attendance"
    mine = client.get(base, headers=scene.headers("organizer")).json
    names = {r["name"] for r in mine}
    assert "张三" in names
    assert "外人" not in names
    theirs = {r["name"] for r in client.get(base, headers=scene.headers("other_organizer")).json}
    assert theirs == {"外人"}
    everyone = {r["name"] for r in client.get(base, headers=scene.headers("admin")).json}
    assert everyone >= {"张三", "外人"}
    for ext in ("csv", "xlsx"):
        export = client.get(f"{base}.{ext}", headers=scene.headers("organizer"))
        assert export.status_code == 200
        if ext == "csv":
            assert "外人" not in export.data.decode("utf-8-sig")
            assert "张三" in export.data.decode("utf-8-sig")
        else:
            import io

            import openpyxl

            wb = openpyxl.load_workbook(io.BytesIO(export.data))
            cells = {c for row in wb["考勤明细"].values for c in row}
            assert "外人" not in cells
            assert "张三" in cells


def test_joint_occurrence_organizer_corrects_only_his_members_and_cannot_lock(client, scene,
                                                                               joint):
    url = f"/api/v1/occurrences/{joint.id}/corrections"
    body = {"status": "excused", "reason": "出差"}
    refused = client.post(url, json={**body, "member_id": scene.outsider.id},
                          headers=scene.headers("organizer"))
    assert refused.status_code == 403
    assert "外人" not in refused.get_data(as_text=True)
    assert client.post(url, json={**body, "member_id": scene.members[0].id},
                       headers=scene.headers("organizer")).status_code == 201
    lock = f"/api/v1/occurrences/{joint.id}/lock"
    early = {"early": True, "reason": "测试：提前审核"}  # both are live: an early lock
    assert client.post(lock, json=early, headers=scene.headers("organizer")).status_code == 403
    assert client.post(lock, json=early, headers=scene.headers("admin")).status_code == 200
    # His own branch's occurrence he still locks.
    assert client.post(f"/api/v1/occurrences/{scene.occurrence.id}/lock", json=early,
                       headers=scene.headers("organizer")).status_code == 200


def test_joint_occurrence_dashboard_counts_others_without_names(att_socket, scene, joint):
    snap = emit(att_socket("organizer"), "dashboard:join",
                {"occurrence_id": joint.id})["snapshot"]
    expected = [p for s in snap["sites"] for p in s["expected"]]
    assert snap["expected_count"] == len(expected)
    named = {p["name"] for p in expected}
    assert "张三" in named
    assert "外人" not in named
    assert "" in named  # the other branch's member: counted, not named


def test_joint_occurrence_organizer_cannot_operate_the_other_organizations_site(
        att_socket, scene, joint):
    refused = emit(att_socket("organizer"), "roll_call:mark", {
        "occurrence_id": joint.id, "site_id": scene.foreign_site.id,
        "member_ids": [scene.outsider.id], "state": "present", "event_id": "x1"})
    assert refused["error"] == "forbidden"
    allowed = emit(att_socket("organizer"), "roll_call:mark", {
        "occurrence_id": joint.id, "site_id": scene.site_a.id,
        "member_ids": [scene.members[0].id], "state": "present", "event_id": "x2"})
    assert allowed["ok"] is True


def test_reports_show_a_site_operator_only_his_sites_members(client, scene):
    r = client.post("/login", data={"username": "op_a", "password": "password123"})
    assert r.status_code == 302
    page = client.get("/attendance/reports?start=2020-01-01").get_data(as_text=True)
    assert "张三" in page  # home site A
    assert "王五" not in page  # home site B: another operator's


def test_qr_check_ins_are_rate_limited_per_member(client, scene, app):
    from attendance.service import make_qr_token
    from core.types import utcnow

    app.config["YUANJIAO_QR_CHECKINS_PER_MINUTE"] = 3
    token, _ = make_qr_token(app.config["SECRET_KEY"], scene.occurrence.id, scene.site_a.id,
                             utcnow(), 25)
    assert client.post("/login", data={"username": "m0", "password": "password123"}
                       ).status_code == 302
    statuses = [client.post(f"/checkin/{token}").status_code for _ in range(4)]
    assert statuses == [200, 400, 400, 429]  # checked in, then "already used", then limited
