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
    assert [r[1] for r in checked] == ["B000004"]
    assert checked[0][4] is not None
