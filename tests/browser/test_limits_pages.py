"""The pages of issue 10's limits in a real browser: a meeting-room screen whose token
expired says so, its operator renews the site's tokens and the screen comes back at the
same address; a user locked out by failed logins shows as locked on the users page and
an admin unlocks him there. Screenshots under test-output/limits/."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from tests.browser.test_live import ensure_tables
from tests.conftest import ROOT, login_page, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.live]

SHOTS = ROOT / "test-output" / "limits"
ROOM = {"width": 1366, "height": 768}


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_expired_screen_renewal_and_login_unlock(live_server_factory, browser):
    server = live_server_factory({"YUANJIAO_MEDIA": "off"})
    ensure_tables(server)
    admin = server.token()

    def api(method, path, **kw):
        response = server.api(method, path, admin, **kw)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    unit = api("POST", "/api/v1/org-units", json={"name": "机关党支部", "kind": "branch"})
    site = api("POST", "/api/v1/sites", json={"name": "一号会议室", "org_unit_id": unit["id"]})
    api("POST", "/api/v1/users", json={"username": "lecturer", "password": "podium-pass-2026",
                                        "role": "trainer", "display_name": "李老师"})
    screen = api("POST", f"/api/v1/sites/{site['id']}/screen-tokens")
    with sqlite3.connect(Path(server.tmp) / "live.sqlite3") as db:  # a year has gone by
        db.execute("UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' "
                   "WHERE purpose = 'site'")

    kiosk = browser.new_page(viewport=ROOM)
    kiosk.goto(screen["screen_url_hint"])
    wait_for_js(kiosk, "() => document.querySelector('[data-state=token-expired]') !== null")
    assert "屏幕令牌已过期" in kiosk.content()
    shot(kiosk, "01-screen-token-expired")

    desk = browser.new_page()
    login_page(desk, server.url, "admin", "admin-password")
    desk.goto(f"{server.url}/org/sites/{site['id']}")
    assert "1 个令牌已过期" in desk.content()
    shot(desk, "02-site-page-expired-token")
    desk.click("#renew-screen-tokens")
    desk.wait_for_url(f"**/org/sites/{site['id']}")
    assert "已续期 1 个屏幕令牌" in desk.content()
    assert "有效期至" in desk.content()
    shot(desk, "03-site-page-renewed")

    kiosk.reload()  # what its own refresh does within a minute
    wait_for_js(kiosk, "() => document.querySelector('[data-state=waiting]') !== null")
    assert "屏幕令牌已过期" not in kiosk.content()
    shot(kiosk, "04-screen-back")

    for n in range(5):
        assert requests.post(server.url + "/api/v1/auth/token", timeout=10, json={
            "username": "lecturer", "password": f"wrong-{n}-guess"}).status_code == 401
    assert requests.post(server.url + "/api/v1/auth/token", timeout=10, json={
        "username": "lecturer", "password": "podium-pass-2026"}).status_code == 429
    desk.goto(f"{server.url}/users")
    assert "登录已锁定" in desk.content()
    shot(desk, "05-users-page-locked")
    desk.click("text=解除登录锁定")
    desk.wait_for_url("**/users")
    assert "已解除该用户的登录锁定" in desk.content()
    assert "登录已锁定" not in desk.content()
    shot(desk, "06-users-page-unlocked")
    assert requests.post(server.url + "/api/v1/auth/token", timeout=10, json={
        "username": "lecturer", "password": "podium-pass-2026"}).status_code == 200
