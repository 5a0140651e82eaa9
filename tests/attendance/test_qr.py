"""QR check-in (attendance/qr.py) through its real path (the member's phone page and the
group-commit writer): one token serves many members, each once; a site outside the
occurrence is refused; tokens rotate; expected members, site networks, the room code."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from attendance import service as svc
from attendance.errors import QrRefused
from attendance.models import AttendanceEvent
from attendance.service import make_qr_token
from core.types import utcnow
from tests.attendance.conftest import SECRET, login


def _token(app, scene, site=None) -> str:
    token, _ = make_qr_token(app.config["SECRET_KEY"], scene.occurrence.id,
                             (site or scene.site_a).id, utcnow(), 25)
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


def test_qr_token_valid_for_its_slot_and_the_next_only(scene):
    now = utcnow()
    token, expires = svc.make_qr_token(SECRET, scene.occurrence.id, scene.site_a.id, now, 25)
    assert expires > now
    assert svc.read_qr_token(SECRET, token, now, 25) == (scene.occurrence.id, scene.site_a.id)
    assert svc.read_qr_token(SECRET, token, now + dt.timedelta(seconds=25), 25)
    with pytest.raises(QrRefused) as err:
        svc.read_qr_token(SECRET, token, now + dt.timedelta(seconds=51), 25)
    assert err.value.code == "qr_expired"
    with pytest.raises(QrRefused) as err:
        svc.read_qr_token("another-secret", token, now, 25)
    assert err.value.code == "qr_invalid"


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
