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


def _token(app, scene, site=None):
    from attendance.service import make_qr_token
    from core.types import utcnow

    return make_qr_token(app.config["SECRET_KEY"], scene.occurrence.id,
                         (site or scene.site_a).id, utcnow(), 25)[0]


def test_a_forwarded_qr_does_not_check_in_someone_not_expected(client, scene, app,
                                                               db_session):
    """The outsider (another organization, not expected) gets the QR link: refused, 403,
    and nothing stored; walk-ins go through the operator's roll call."""
    from sqlalchemy import func, select

    from attendance.models import AttendanceEvent

    login(client, "outsider")
    r = client.post(f"/checkin/{_token(app, scene)}")
    assert r.status_code == 403
    assert 'data-code="qr_not_expected"' in r.get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(AttendanceEvent)) == 0


def test_site_options_network_ranges_and_the_spoken_room_code(client, scene, app, db_session):
    from attendance.service import current_room_code
    from core.types import utcnow
    from org.models import Site

    site = db_session.get(Site, scene.site_a.id)
    site.checkin_networks = "10.20.0.0/16"
    db_session.commit()
    login(client, "m0")
    token = _token(app, scene)
    r = client.post(f"/checkin/{token}", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert r.status_code == 403
    assert 'data-code="qr_network"' in r.get_data(as_text=True)
    site.checkin_code_required = True
    db_session.commit()
    page = client.get(f"/checkin/{token}", environ_base={"REMOTE_ADDR": "10.20.3.4"})
    assert 'name="code"' in page.get_data(as_text=True)
    r = client.post(f"/checkin/{token}", data={"code": "0000" if current_room_code(
        app.config["SECRET_KEY"], scene.occurrence.id, scene.site_a.id, utcnow(), 25) != "0000"
        else "1111"}, environ_base={"REMOTE_ADDR": "10.20.3.4"})
    assert r.status_code == 400
    assert 'data-code="qr_code_wrong"' in r.get_data(as_text=True)
    assert 'name="code"' in r.get_data(as_text=True)  # asked again on the same page
    code = current_room_code(app.config["SECRET_KEY"], scene.occurrence.id, scene.site_a.id,
                             utcnow(), 25)
    r = client.post(f"/checkin/{token}", data={"code": code},
                    environ_base={"REMOTE_ADDR": "10.20.3.4"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert "签到成功" in r.get_data(as_text=True)


def test_site_checkin_options_through_the_api_are_validated(client, scene):
    url = f"/api/v1/sites/{scene.site_a.id}"
    r = client.patch(url, json={"checkin_networks": "not-a-network"},
                     headers=scene.headers("organizer"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "checkin_networks")
    r = client.patch(url, json={"checkin_networks": "10.0.0.0/8, 192.168.1.0/24",
                                "checkin_code_required": True},
                     headers=scene.headers("organizer"))
    assert r.status_code == 200, r.json
    assert (r.json["checkin_networks"], r.json["checkin_code_required"]) == (
        "10.0.0.0/8\n192.168.1.0/24", True)


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


def test_reports_export_xlsx_with_presets_and_branch_subtotals(client, scene):
    import io

    import openpyxl

    login(client, "organizer")
    page = client.get("/attendance/reports?preset=year").get_data(as_text=True)
    assert "本季度" in page
    assert client.get("/attendance/reports?preset=decade").status_code == 422
    r = client.get("/attendance/reports?preset=year&format=xlsx")
    assert r.status_code == 200
    assert "filename*=UTF-8''" in r.headers["Content-Disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.data))
    branches = list(wb["按支部"].values)
    assert branches[0][0].endswith("考勤统计")
    assert branches[2][:2] == ("支部", "人数")
    assert branches[-1][0] == "合计"
    members = list(wb["按党员"].values)
    subtotals = [row for row in members if isinstance(row[0], str) and row[0].endswith("小计")]
    assert subtotals
    assert wb["按党员"].page_setup.orientation == "landscape"


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
