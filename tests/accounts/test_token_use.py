"""`ApiToken.last_used_at`: written when a token is used (a GET too), once a minute at most."""

from __future__ import annotations

import datetime as dt

from accounts.models import ApiToken
from accounts.service import hash_token
from core.types import utcnow


def _row(db_session, token: str) -> ApiToken:
    db_session.expire_all()
    return db_session.query(ApiToken).filter_by(token_hash=hash_token(token)).one()


def test_a_get_records_the_use_once_a_minute(client, factory, db_session):
    admin = factory.user("admin")
    token = factory.token(admin)
    db_session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    assert _row(db_session, token).last_used_at is None
    before = utcnow()
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    first = _row(db_session, token).last_used_at
    assert first is not None
    assert first >= before - dt.timedelta(seconds=1)
    # Within the minute: not written again.
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert _row(db_session, token).last_used_at == first
    # A minute later it is.
    row = _row(db_session, token)
    row.last_used_at = first - dt.timedelta(minutes=2)
    db_session.commit()
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert _row(db_session, token).last_used_at >= first


def test_a_site_screen_socket_records_the_use(socket_client_factory, factory, db_session):
    from accounts.service import issue_site_token

    site = factory.site(factory.org_unit())
    token = issue_site_token(db_session, site)
    db_session.commit()
    sc = socket_client_factory(namespace="/attendance", auth={"token": token})
    assert sc.is_connected("/attendance")
    assert _row(db_session, token).last_used_at is not None


def test_a_refused_token_records_nothing(client, factory, db_session):
    admin = factory.user("admin")
    token = factory.token(admin)
    admin.active = False
    db_session.commit()
    r = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert _row(db_session, token).last_used_at is None
