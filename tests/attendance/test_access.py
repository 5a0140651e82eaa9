"""Who may take roll call and post attendance events (attendance/access.py)."""

from __future__ import annotations

import pytest

from tests.attendance.conftest import body, events_url, stored


@pytest.mark.parametrize("who", ["operator_b", "screen_b", "member0", "other_organizer",
                                 "trainer"])
def test_who_may_not_post_is_403(client, scene, db_session, who):
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers(who))
    assert r.status_code == 403
    assert stored(db_session) == 0


def test_foreign_occurrence_is_403_and_no_auth_401(client, scene, db_session):
    url = f"/api/v1/occurrences/{scene.foreign_occurrence.id}/attendance-events"
    assert client.post(url, json=body(scene), headers=scene.headers("operator_a")).status_code \
        == 403
    assert client.post(events_url(scene), json=body(scene)).status_code == 401
    r = client.post(events_url(scene), json=body(scene),
                    headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert stored(db_session) == 0
