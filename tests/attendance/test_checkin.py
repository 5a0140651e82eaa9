"""QR check-in through its real path (the member's phone page and the group-commit writer):
one token serves many members, each once; a site outside the occurrence is refused."""

from __future__ import annotations

from sqlalchemy import select

from attendance.models import AttendanceEvent
from attendance.service import make_qr_token
from core.types import utcnow
from tests.attendance.test_pages import login


def _token(app, scene, site) -> str:
    token, _ = make_qr_token(app.config["SECRET_KEY"], scene.occurrence.id, site.id,
                             utcnow(), 25)
    return token


def test_one_token_checks_in_many_members_each_once(app, client, scene, db_session):
    token = _token(app, scene, scene.site_a)
    other = app.test_client()
    login(client, "m0")
    login(other, "m1")
    assert client.post(f"/checkin/{token}").status_code == 200
    assert other.post(f"/checkin/{token}").status_code == 200
    again = client.post(f"/checkin/{token}")
    assert again.status_code == 400
    assert "qr_reused" in again.get_data(as_text=True)
    db_session.expire_all()
    events = db_session.scalars(select(AttendanceEvent).where(
        AttendanceEvent.type == "qr_check_in").order_by(AttendanceEvent.member_id)).all()
    assert [(e.member_id, e.site_id) for e in events] == [
        (scene.members[0].id, scene.site_a.id), (scene.members[1].id, scene.site_a.id)]


def test_a_token_of_a_site_outside_the_occurrence_is_refused(app, client, scene, db_session):
    token = _token(app, scene, scene.foreign_site)
    login(client, "m0")
    r = client.post(f"/checkin/{token}")
    assert r.status_code == 403
    db_session.expire_all()
    assert db_session.scalars(select(AttendanceEvent)).all() == []
