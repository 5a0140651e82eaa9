"""Lists of sessions and occurrences, with offsets on every time (sessions/queries.py)."""

from __future__ import annotations

import re

from tests.sessions.conftest import OFFSET, _body


def _times_have_offsets(obj) -> None:
    """Every value that looks like a time carries an offset."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
                assert OFFSET.match(value), f"{key}={value} has no offset"
            else:
                _times_have_offsets(value)
    elif isinstance(obj, list):
        for item in obj:
            _times_have_offsets(item)


def test_create_and_list_occurrences(client, world, admin_h):
    r = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=3",
                                                   exdates=[]), headers=admin_h)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert isinstance(body["id"], int)
    assert body["occurrence_count"] == 3
    _times_have_offsets(body)
    r = client.get(f"/api/v1/sessions/{body['id']}/occurrences", headers=admin_h)
    assert r.status_code == 200
    occ = r.get_json()
    assert len(occ) == 3
    for row in occ:
        assert {"id", "starts_at", "ends_at", "status"} <= set(row)
        assert row["status"] == "scheduled"
    _times_have_offsets(occ)
    # from/to narrow the list (a "+" sent unescaped in the query is read as meant).
    start = occ[1]["starts_at"]
    r = client.get(f"/api/v1/sessions/{body['id']}/occurrences?from={start}", headers=admin_h)
    assert [o["id"] for o in r.get_json()] == [occ[1]["id"], occ[2]["id"]]
    # Paginated occurrence list with the X-Pagination header.
    r = client.get("/api/v1/occurrences?page_size=2", headers=admin_h)
    assert r.status_code == 200
    assert len(r.get_json()) == 2
    assert '"total": 3' in r.headers["X-Pagination"]
    _times_have_offsets(r.get_json())
