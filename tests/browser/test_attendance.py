"""Browser: the room screen's QR, a member's phone checks in, the dashboard sees it live,
and the xlsx export reads back."""

from __future__ import annotations

import openpyxl
import pytest

from bench.attendance import seed
from tests.conftest import login_page, wait_for_js

pytestmark = pytest.mark.browser


def test_qr_check_in_reaches_the_dashboard_and_the_export(tmp_path, live_server_factory,
                                                          browser):
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    cfg = seed(url, sites=1, members=5, viewers=1, admin_password="admin-password")
    server = live_server_factory({"YUANJIAO_AUTO_MIGRATE": "0", "YUANJIAO_MEDIA": "off"})
    occ, site = cfg["occurrence_id"], cfg["site_ids"][0]
    member_id = cfg["member_ids"][-1]  # viewer0's roster entry

    # the room screen: a site token, no login
    screen = browser.new_context().new_page()
    screen.goto(f"{server.url}/attendance/{occ}/screen/{site}?token={cfg['screen_tokens'][0]}")
    screen.wait_for_selector("#checkin-qr[data-url]", timeout=20000)
    qr_url = screen.get_attribute(".att-qr-url", "href")
    assert "/checkin/" in qr_url
    assert screen.inner_text(".att-present-count") == "0"

    # the organizer's dashboard, open before the check-in
    dash_ctx = browser.new_context(accept_downloads=True)
    dash = dash_ctx.new_page()
    login_page(dash, server.url, "admin", "admin-password")
    dash.goto(f"{server.url}/attendance/{occ}")
    dash.wait_for_selector(f".att-names li[data-member='{member_id}'].att-away", timeout=20000)

    # the member's phone: the QR link asks for login, then confirms
    phone = browser.new_context().new_page()
    phone.goto(qr_url)
    assert "/login" in phone.url
    phone.fill("input[name=username]", "viewer0")
    phone.fill("input[name=password]", "password123")
    phone.click("button[type=submit]")
    phone.wait_for_url(lambda u: "/checkin/" in u)
    phone.click("button.att-confirm")
    phone.wait_for_selector(".att-done")

    # live, without reload
    dash.wait_for_selector(f".att-names li[data-member='{member_id}'].att-here", timeout=20000)
    assert dash.inner_text(".att-dashboard .att-present-count") == "1"
    wait_for_js(screen,
        "document.querySelector('.att-present-count').textContent === '1'", timeout=20000)

    # the same token again: refused as reused
    phone.goto(qr_url)
    phone.click("button.att-confirm")
    assert phone.get_attribute(".att-error", "data-code") == "qr_reused"

    # the organizer approves a leave and corrects a record on the dashboard; the cards
    # and the table agree (one derivation), names everywhere
    import os

    shots = os.environ.get("YUANJIAO_SHOTS") or "test-output/journeys"
    os.makedirs(shots, exist_ok=True)
    on_leave, corrected = cfg["member_ids"][0], cfg["member_ids"][1]
    leave_form = dash.locator("form.att-api-form").nth(0)
    leave_form.locator("select[name=member_id]").select_option(str(on_leave))
    leave_form.locator("input[name=reason]").fill("出差")
    leave_form.locator("button[type=submit]").click()
    dash.wait_for_selector("button.att-api-button:has-text('批准')", timeout=20000)
    dash.click("button.att-api-button:has-text('批准')")
    dash.wait_for_selector("td:has-text('已批准')", timeout=20000)
    fix_form = dash.locator("form.att-api-form").nth(1)
    fix_form.locator("select[name=member_id]").select_option(str(corrected))
    fix_form.locator("select[name=status]").select_option("present")
    fix_form.locator("input[name=reason]").fill("签到机故障，现场确认")
    fix_form.locator("button[type=submit]").click()
    dash.wait_for_selector("td:has-text('签到机故障')", timeout=20000)
    wait_for_js(dash, "document.querySelector('.att-attended-count').textContent === '2'",
                timeout=20000)
    dash.screenshot(path=f"{shots}/20-organizer-dashboard-leave-and-correction.png",
                    full_page=True)
    assert dash.inner_text(".att-excused-count") == "1"
    statuses = [dash.inner_text(f"tr[data-member='{m}'] .att-status")
                for m in (member_id, on_leave, corrected)]
    assert statuses == ["出席", "请假", "出席"]
    assert "缺席" not in dash.inner_text(f"tr[data-member='{on_leave}']")  # not before the end
    audit = dash.inner_text("table.att-table >> nth=-1")
    assert "admin" in audit  # the corrector by name, not by id
    assert str(corrected) not in audit.split()

    # the export downloads and reads back
    with dash.expect_download() as info:
        dash.click(".att-export-xlsx")
    path = tmp_path / "sheet.xlsx"
    info.value.save_as(path)
    rows = list(openpyxl.load_workbook(path)["考勤明细"].values)
    assert rows[0][0].endswith("考勤表")  # the title row, then the lesson's facts
    rows = rows[2:]
    assert rows[0][0] == "姓名"
    assert len(rows) == 1 + 5
    checked = [r for r in rows[1:] if r[7] == "出席"]
    assert len(checked) == 2  # the QR check-in and the correction
    assert [r[7] for r in rows[1:]].count("请假") == 1
    assert [r[4] is not None for r in checked].count(True) == 1  # only the QR has a time
