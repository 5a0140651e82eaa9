"""A session's fields checked, each error naming its field (sessions/validation.py)."""

from __future__ import annotations

import pytest

from tests.sessions.conftest import _body


@pytest.mark.parametrize(("patch", "field"), [
    ({"starts_at": "2026-13-01T10:00:00+08:00"}, "starts_at"),
    ({"starts_at": "2026-03-04T19:30:00"}, "starts_at"),
    ({"starts_at": "tomorrow"}, "starts_at"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "China Standard Time"}, "timezone"),
    ({"rrule": "FREQ=SECONDLY"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;COUNT=2;UNTIL=20300101T000000Z"}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=QQ"}, "rrule"),
    ({"site_ids": [999999]}, "site_ids"),
    ({"org_unit_ids": [999999], "site_ids": []}, "org_unit_ids"),
    ({"site_ids": [], "org_unit_ids": []}, "site_ids"),
    ({"duration_minutes": 0}, "duration_minutes"),
    ({"duration_minutes": 2000}, "duration_minutes"),
    ({"duration_minutes": "ninety"}, "duration_minutes"),
    ({"kind": "party"}, "kind"),
    ({"title": ""}, "title"),
    ({"trainer_id": 999999}, "trainer_id"),
    ({"exdates": ["2026-03-04"]}, "exdates"),
    ({"exdates": ["2026-03-04T19:30:00"]}, "exdates"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_input_names_the_field(client, world, admin_h, patch, field):
    r = client.post("/api/v1/sessions", json=_body(world, **patch), headers=admin_h)
    assert r.status_code in (400, 422), r.get_json()
    body = r.get_json()
    assert set(body) == {"error", "message", "details"}
    assert body["details"]["field"] == field, body


def test_trainer_id_must_be_a_trainer(client, world, admin_h):
    r = client.post("/api/v1/sessions", json=_body(world, trainer_id=world.member.id),
                    headers=admin_h)
    assert r.status_code == 422
    assert r.get_json()["details"]["field"] == "trainer_id"


def test_bad_occurrence_patch(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world), headers=admin_h).get_json()["id"]
    oid = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()[0]["id"]
    for payload, field in (({"status": "gone"}, "status"),
                           ({"starts_at": "2026-03-01"}, "starts_at"), ({}, "starts_at")):
        r = client.patch(f"/api/v1/occurrences/{oid}", json=payload, headers=admin_h)
        assert r.status_code in (400, 422)
        assert r.get_json()["details"]["field"] == field
    assert client.patch("/api/v1/occurrences/999999", json={"status": "cancelled"},
                        headers=admin_h).status_code == 404
