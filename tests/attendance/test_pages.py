"""Attendance pages render for the right users and refuse the others."""

from __future__ import annotations

import pytest


def login(client, username: str) -> None:
    r = client.post("/login", data={"username": username, "password": "password123"})
    assert r.status_code == 302


@pytest.mark.parametrize("path", ["/attendance/{occ}", "/attendance/{occ}/sign-in-sheet",
                                  "/attendance/{occ}/absentees", "/attendance/reports",
                                  "/attendance/ledger", "/attendance/{occ}/screen/{site}"])
def test_organizer_pages_render(client, scene, path):
    login(client, "organizer")
    r = client.get(path.format(occ=scene.occurrence.id, site=scene.site_a.id))
    assert r.status_code == 200, r.data[:500]
    assert "text/html" in r.content_type


def test_dashboard_refuses_other_organizers_and_ledger_xlsx(client, scene):
    login(client, "organizer2")
    assert client.get(f"/attendance/{scene.occurrence.id}").status_code == 403
    r = client.get("/attendance/ledger?format=xlsx")
    assert r.status_code == 200
    assert r.data[:2] == b"PK"


def test_sign_in_sheet_has_print_styles_and_names(client, scene):
    login(client, "organizer")
    html = client.get(f"/attendance/{scene.occurrence.id}/sign-in-sheet").get_data(as_text=True)
    assert "签到表" in html
    assert "张三" in html
    assert "attendance.css" in html


def test_checkin_page_needs_login_then_checks_in(client, scene, app):
    from attendance.service import make_qr_token
    from core.types import utcnow

    token, _ = make_qr_token(app.config["SECRET_KEY"], scene.occurrence.id, scene.site_a.id,
                             utcnow(), 25)
    r = client.get(f"/checkin/{token}")
    assert r.status_code == 302
    assert "/login?next=" in r.location
    login(client, "m0")
    assert "确认签到" in client.get(f"/checkin/{token}").get_data(as_text=True)
    r = client.post(f"/checkin/{token}")
    assert r.status_code == 200
    assert "签到成功" in r.get_data(as_text=True)
    r = client.post(f"/checkin/{token}")
    assert r.status_code == 400
    assert "qr_reused" in r.get_data(as_text=True)
    assert client.get("/checkin/garbage").status_code == 400


def test_makeup_pages_for_members(client, scene):
    login(client, "m0")
    assert client.get("/makeup").status_code == 200
    assert client.get("/makeup/999").status_code == 404
