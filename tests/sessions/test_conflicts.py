"""Schedule conflicts: a named site or the trainer booked twice (sessions/conflicts.py)."""

from __future__ import annotations

from tests.sessions.conftest import OFFSET, _body, _future


def test_site_conflict_is_409_naming_the_clash(client, world, admin_h):
    first = client.post("/api/v1/sessions", json=_body(world, trainer_id=None),
                        headers=admin_h).get_json()
    clash = _body(world, title="支部大会", trainer_id=world.trainer2.id,
                  starts_at=_future(hour=20), org_unit_ids=[])
    r = client.post("/api/v1/sessions", json=clash, headers=admin_h)
    assert r.status_code == 409
    body = r.get_json()
    conflict = body["details"]["conflict"]
    assert conflict["kind"] == "site"
    assert conflict["site_id"] == world.site_a.id
    assert conflict["session_title"] == "党史讲座"
    occ_id = client.get(f"/api/v1/sessions/{first['id']}/occurrences",
                        headers=admin_h).get_json()[0]["id"]
    assert conflict["occurrence_id"] == occ_id
    assert f"#{occ_id}" in body["message"]
    assert "一号会议室" in body["message"]
    assert "党史讲座" in body["message"]
    assert OFFSET.match(conflict["starts_at"])
    # Back to back is fine; the other site is fine.
    ok = client.post("/api/v1/sessions", json={**clash, "starts_at": _future(hour=21)},
                     headers=admin_h)
    assert ok.status_code == 201
    ok = client.post("/api/v1/sessions", json={**clash, "site_ids": [world.site_b.id],
                                               "trainer_id": None}, headers=admin_h)
    assert ok.status_code == 201


def test_trainer_conflict_and_cancelled_do_not_clash(client, world, admin_h):
    first = client.post("/api/v1/sessions", json=_body(world), headers=admin_h).get_json()
    other = _body(world, title="党课", site_ids=[world.site_b.id], org_unit_ids=[],
                  starts_at=_future(hour=20))
    r = client.post("/api/v1/sessions", json=other, headers=admin_h)
    assert r.status_code == 409
    conflict = r.get_json()["details"]["conflict"]
    assert conflict["kind"] == "trainer"
    assert conflict["trainer_id"] == world.trainer.id
    assert "trainer" in r.get_json()["message"]  # the trainer's display name
    occ = client.get(f"/api/v1/sessions/{first['id']}/occurrences", headers=admin_h).get_json()
    client.patch(f"/api/v1/occurrences/{occ[0]['id']}", json={"status": "cancelled"},
                 headers=admin_h)
    r = client.post("/api/v1/sessions", json=other, headers=admin_h)
    assert r.status_code == 201
    # Restoring the cancelled one now clashes and is refused.
    r = client.patch(f"/api/v1/occurrences/{occ[0]['id']}", json={"status": "scheduled"},
                     headers=admin_h)
    assert r.status_code == 409


def test_moving_onto_a_booked_slot_is_refused(client, world, admin_h):
    client.post("/api/v1/sessions", json=_body(world, trainer_id=None), headers=admin_h)
    sid = client.post("/api/v1/sessions", json=_body(world, trainer_id=None, title="B",
                                                     starts_at=_future(days=8)),
                      headers=admin_h).get_json()["id"]
    oid = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()[0]["id"]
    r = client.patch(f"/api/v1/occurrences/{oid}", json={"starts_at": _future(hour=20)},
                     headers=admin_h)
    assert r.status_code == 409
    assert r.get_json()["details"]["conflict"]["session_title"] == "党史讲座"


def test_preview_shows_next_occurrences_and_conflicts(client, world, admin_h):
    client.post("/api/v1/sessions", json=_body(world), headers=admin_h)
    body = _body(world, rrule="FREQ=WEEKLY;COUNT=12", trainer_id=None, title="x")
    r = client.post("/api/v1/sessions/preview", json=body, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["total"] == 12
    assert len(out["occurrences"]) == 10
    assert out["conflicts"][0]["site_id"] == world.site_a.id
    assert "一号会议室" in out["conflicts"][0]["message"]
    r = client.post("/api/v1/sessions/preview", json={**body, "rrule": "FREQ=HOURLY"},
                    headers=admin_h)
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "rrule"
