"""Occurrences, members and sites looked up by id: unknown ones are 404 (attendance/lookups.py)."""

from __future__ import annotations

from tests.attendance.conftest import body, events_url


def test_unknown_occurrence_member_site_are_404(client, scene):
    r = client.post("/api/v1/occurrences/999/attendance-events", json=body(scene),
                    headers=scene.headers("admin"))
    assert r.status_code == 404
    r = client.post(events_url(scene), json={**body(scene), "member_id": 999},
                    headers=scene.headers("admin"))
    assert r.status_code == 404
