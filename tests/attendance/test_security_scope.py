"""Security, scopes (issue 10, finding 3): a site's walk-in check-in of another
organization's member is refused exactly like an unknown id, naming no one."""

from __future__ import annotations

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
