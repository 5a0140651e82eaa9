"""Screen tokens expire (issue 10, sessions and tokens): a meeting-room screen's token
lives YUANJIAO_SCREEN_TOKEN_DAYS, is shown with its expiry on the site's page and renewed
there (or by API); an expired one gets a clear page, not a 500, and its socket is
refused."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from accounts import service
from accounts.models import ApiToken
from core.types import utcnow
from tests.attendance.conftest import emit


def _row(db_session, token: str) -> ApiToken:
    return db_session.scalar(select(ApiToken).where(
        ApiToken.token_hash == service.hash_token(token)))


def _expire(db_session, token: str) -> None:
    _row(db_session, token).expires_at = utcnow() - dt.timedelta(minutes=1)
    db_session.commit()


def test_a_screen_token_expires_after_the_setting(app, client, scene, db_session):
    app.config["YUANJIAO_SCREEN_TOKEN_DAYS"] = 30
    issued = client.post(f"/api/v1/sites/{scene.site_a.id}/screen-tokens",
                         headers=scene.headers("admin"))
    assert issued.status_code == 201
    expires = dt.datetime.fromisoformat(issued.json["expires_at"])
    assert dt.timedelta(days=29) < expires - utcnow() <= dt.timedelta(days=30)
    row = _row(db_session, issued.json["token"])
    assert abs(row.expires_at - expires) < dt.timedelta(seconds=5)
    # The default: a year.
    row = _row(db_session, scene.tokens["screen_a"])
    assert dt.timedelta(days=364) < row.expires_at - utcnow() <= dt.timedelta(days=365)


def test_an_expired_screen_shows_a_clear_page_and_renewal_brings_it_back(
        client, scene, db_session):
    token = scene.tokens["screen_a"]
    url = f"/screen/{scene.site_a.id}?token={token}"
    assert client.get(url).status_code == 302  # the lecture that runs now
    _expire(db_session, token)
    expired = client.get(url)
    assert expired.status_code == 403
    page = expired.get_data(as_text=True)
    assert "屏幕令牌已过期" in page
    assert "续期" in page
    assert 'http-equiv="refresh"' in page  # it looks again by itself
    live = client.get(f"/live/{scene.occurrence.id}/site/{scene.site_a.id}?token={token}")
    assert live.status_code == 403
    assert "屏幕令牌已过期" in live.get_data(as_text=True)
    assert client.get(f"/screen/{scene.site_a.id}?token=nonsense").status_code == 403
    # Another site's operator may not renew; the site's own may, and the screen is back.
    url_renew = f"/api/v1/sites/{scene.site_a.id}/screen-tokens/renew"
    assert client.post(url_renew, headers=scene.headers("operator_b")).status_code == 403
    renewed = client.post(url_renew, headers=scene.headers("operator_a"))
    assert renewed.status_code == 200, renewed.json
    assert renewed.json["renewed"] == 1
    assert client.get(url).status_code == 302


def test_an_expired_screen_token_cannot_join_a_site(att_socket, scene, db_session):
    data = {"occurrence_id": scene.occurrence.id, "site_id": scene.site_a.id}
    before = att_socket("screen_a")
    assert emit(before, "site:join", data)["ok"] is True
    _expire(db_session, scene.tokens["screen_a"])
    # A new connection is refused; one opened before the expiry cannot join again.
    refused = att_socket("screen_a")
    assert not refused.is_connected("/attendance")
    again = emit(before, "site:join", data)
    assert again["ok"] is False
    assert again["error"] == "invalid_token"


def test_the_sites_page_shows_the_expiry_and_renews(app, scene, db_session):
    browser = app.test_client()
    assert browser.post("/login", data={"username": "op_a", "password": "password123"}
                        ).status_code == 302
    _expire(db_session, scene.tokens["screen_a"])
    page = browser.get(f"/org/sites/{scene.site_a.id}").get_data(as_text=True)
    assert "1 个令牌已过期" in page
    assert f"/org/sites/{scene.site_a.id}/screen-tokens/renew" in page
    done = browser.post(f"/org/sites/{scene.site_a.id}/screen-tokens/renew",
                        follow_redirects=True).get_data(as_text=True)
    assert "已续期 1 个屏幕令牌" in done
    assert "有效期至" in done
    assert "个令牌已过期" not in done
    assert _row(db_session, scene.tokens["screen_a"]).expires_at > utcnow() + dt.timedelta(
        days=364)
