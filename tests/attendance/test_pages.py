"""Attendance pages render for the right users and refuse the others."""

from __future__ import annotations

import pytest

from tests.attendance.conftest import login


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


def test_workbench_rows_have_one_primary_action_and_a_live_headcount(client, scene):
    import re

    login(client, "op_a")
    html = client.get("/").get_data(as_text=True)
    row = html[html.index(f'data-occurrence-id="{scene.occurrence.id}"'):]
    row = row[:row.index("</tr>")]
    assert len(re.findall(r'class="button small primary"', row)) == 1
    assert f"/live/{scene.occurrence.id}/site/{scene.site_a.id}" in row  # its primary
    assert 'class="row-menu"' in row
    url = re.search(r'class="live-headcount" data-url="([^"]+)"', row).group(1)
    counts = client.get(url).get_json()
    # his room's headcount (members A's two), as its screen shows it
    assert (counts["site_id"], counts["expected_count"], counts["present_count"]) == (
        scene.site_a.id, 2, 0)
    login(client, "organizer")
    assert client.get(url).get_json()["expected_count"] == 4  # the whole lesson
    login(client, "outsider")
    assert client.get(url).status_code == 403


def test_sign_in_sheet_header_and_totals_and_makeup_list(client, scene):
    login(client, "organizer")
    html = client.get(f"/attendance/{scene.occurrence.id}/sign-in-sheet").get_data(as_text=True)
    for label in ("学习内容", "主持人", "讲师", "实到", "请假", "缺席"):
        assert label in html
    assert "trainer" in html  # the lesson's trainer by name
    login(client, "m0")
    html = client.get("/makeup").get_data(as_text=True)
    assert "已观看 / 需观看（分钟）" in html
    with client.get("/favicon.ico") as icon:
        assert icon.status_code == 200
        assert icon.mimetype == "image/svg+xml"
