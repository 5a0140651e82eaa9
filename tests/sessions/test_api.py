"""The sessions API: reading, editing, moving and deleting sessions and occurrences, bad
ranges, the OpenAPI document (each rule module's tests are in its test_<module>.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.sessions.conftest import _body, _future


def test_session_get_patch_delete(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=2"),
                      headers=admin_h).get_json()["id"]
    r = client.get(f"/api/v1/sessions/{sid}", headers=admin_h)
    assert r.status_code == 200
    assert r.get_json()["rrule"] == "FREQ=WEEKLY;COUNT=2"
    seq = r.get_json()["sequence"]
    r = client.patch(f"/api/v1/sessions/{sid}",
                     json={"title": "新标题", "rrule": "FREQ=WEEKLY;COUNT=4"}, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["title"] == "新标题"
    assert r.get_json()["occurrence_count"] == 4
    assert r.get_json()["sequence"] > seq
    assert client.get("/api/v1/sessions", headers=admin_h).get_json()[0]["id"] == sid
    assert client.delete(f"/api/v1/sessions/{sid}", headers=admin_h).status_code == 204
    assert client.get(f"/api/v1/sessions/{sid}", headers=admin_h).status_code == 404


def test_patch_occurrence_move_cancel_restore(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=DAILY;COUNT=3"),
                      headers=admin_h).get_json()["id"]
    occ = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()
    target = occ[1]
    new_start = _future(days=20, hour=8)
    r = client.patch(f"/api/v1/occurrences/{target['id']}", json={"starts_at": new_start},
                     headers=admin_h)
    assert r.status_code == 200, r.get_json()
    moved = r.get_json()
    assert moved["id"] == target["id"]
    assert dt.datetime.fromisoformat(moved["starts_at"]) == dt.datetime.fromisoformat(new_start)
    assert moved["original_start"] == target["starts_at"]
    r = client.patch(f"/api/v1/occurrences/{occ[2]['id']}", json={"status": "cancelled"},
                     headers=admin_h)
    assert r.get_json()["status"] == "cancelled"
    listed = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=admin_h).get_json()
    assert [o["id"] for o in listed] == [occ[0]["id"], occ[2]["id"], target["id"]]
    assert [o["status"] for o in listed] == ["scheduled", "cancelled", "scheduled"]
    r = client.patch(f"/api/v1/occurrences/{occ[2]['id']}", json={"status": "scheduled"},
                     headers=admin_h)
    assert r.get_json()["status"] == "scheduled"
    r = client.get(f"/api/v1/occurrences/{target['id']}", headers=admin_h)
    assert r.status_code == 200
    assert r.get_json()["title"] == "党史讲座"


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-03-01T00:00:00",
                                   "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z"])
def test_bad_ranges_name_the_field(client, world, admin_h, query):
    r = client.get(f"/api/v1/occurrences?{query}", headers=admin_h)
    assert r.status_code in (400, 422)
    assert r.get_json()["details"]["field"] in ("from", "to")


# --- conflicts -----------------------------------------------------------------------------------


def test_preview_of_an_edit_says_which_booked_occurrences_it_drops_or_moves(
        client, world, admin_h, db_session):
    from sessions.models import Occurrence

    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=4"),
                      headers=admin_h).get_json()["id"]
    r = client.post("/api/v1/sessions/preview",
                    json={"session_id": sid, "rrule": "FREQ=WEEKLY;COUNT=2"}, headers=admin_h)
    assert r.status_code == 200, r.get_json()
    changes = r.get_json()["changes"]
    assert len(changes["dropped"]) == 2
    assert changes["message"].startswith("将删除 2 个已排场次")
    # a new time of day moves the booked rows (same ids), and says so
    later = _future(hour=21)
    r = client.post("/api/v1/sessions/preview", json={"session_id": sid, "starts_at": later},
                    headers=admin_h)
    changes = r.get_json()["changes"]
    assert (len(changes["moved"]), changes["dropped"], changes["added"]) == (4, [], 0)
    assert "将改期 4 个场次" in changes["message"]
    # nothing was changed by the previews
    db_session.expire_all()
    assert db_session.query(Occurrence).filter_by(session_id=sid).count() == 4
    r = client.post("/api/v1/sessions/preview", json=_body(world, title="new"), headers=admin_h)
    assert r.get_json()["changes"] is None


# --- roles and scope ---------------------------------------------------------------------------


def test_openapi_documents_the_sessions_api(client):
    spec = client.get("/api/openapi.json").get_json()
    for path in ("/api/v1/sessions", "/api/v1/sessions/{session_id}/occurrences",
                 "/api/v1/occurrences/{occurrence_id}", "/api/v1/sessions/import"):
        assert path in spec["paths"]


def test_preview_changes_read_in_english(client, world, admin_h):
    sid = client.post("/api/v1/sessions", json=_body(world, rrule="FREQ=WEEKLY;COUNT=4"),
                      headers=admin_h).get_json()["id"]
    r = client.post("/api/v1/sessions/preview?lang=en",
                    json={"session_id": sid, "rrule": "FREQ=WEEKLY;COUNT=2"},
                    headers={**admin_h, "Accept-Language": "en"})
    message = r.get_json()["changes"]["message"]
    assert message.startswith("Will remove 2 booked occurrences")
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in message)
