"""Who sees and who edits which session (sessions/access.py)."""

from __future__ import annotations

import datetime as dt

from tests.sessions.conftest import _body


def test_who_may_create(client, world, factory):
    body = _body(world)
    for user, status in ((world.trainer, 403), (world.operator, 403), (world.member, 403)):
        r = client.post("/api/v1/sessions", json=body, headers=factory.headers(user))
        assert r.status_code == status, user.username
    # An organizer of branch A may not aim at branch B or its site.
    h = factory.headers(world.organizer)
    r = client.post("/api/v1/sessions", json=_body(world, site_ids=[world.site_b.id],
                                                   org_unit_ids=[]), headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/sessions", json=_body(world, site_ids=[],
                                                   org_unit_ids=[world.committee.id]), headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/sessions", json=body, headers=h)
    assert r.status_code == 201
    assert client.post("/api/v1/sessions", json=body).status_code == 401


def test_who_sees_what(client, world, factory, make_session):
    a = make_session(title="A 支部")
    b = make_session(title="B 支部", site_ids=[world.site_b.id], org_unit_ids=[world.branch_b.id],
                     trainer_id=world.trainer2.id)
    committee = make_session(title="全体", site_ids=[], org_unit_ids=[world.committee.id],
                             trainer_id=None, starts_at=a.starts_at + dt.timedelta(days=1))
    expected = {
        world.admin: {a.id, b.id, committee.id},
        world.organizer: {a.id},
        world.organizer_b: {b.id},
        world.trainer: {a.id},
        world.trainer2: {b.id},
        # A site under a targeted unit is targeted (sessions/targets.py): its operator sees
        # the committee's session he may watch and take the roll call of.
        world.operator: {a.id, committee.id},
        world.operator_b: {b.id, committee.id},
        world.member: {a.id, committee.id},
        world.member_b_user: {b.id, committee.id},
    }
    for user, ids in expected.items():
        h = factory.headers(user)
        listed = {s["id"] for s in client.get("/api/v1/sessions", headers=h).get_json()}
        assert listed == ids, user.username
        occ_sessions = {o["session_id"] for o in
                        client.get("/api/v1/occurrences", headers=h).get_json()}
        assert occ_sessions == ids, user.username
        for sid in (a.id, b.id):
            r = client.get(f"/api/v1/sessions/{sid}", headers=h)
            assert r.status_code == (200 if sid in ids else 403), (user.username, sid)
            r = client.get(f"/api/v1/sessions/{sid}/occurrences", headers=h)
            assert r.status_code == (200 if sid in ids else 403), (user.username, sid)


def test_who_may_edit(client, world, factory, make_session):
    a = make_session()
    oid = a.occurrences[0].id
    for user in (world.organizer_b, world.trainer, world.operator, world.member):
        h = factory.headers(user)
        assert client.patch(f"/api/v1/sessions/{a.id}", json={"title": "x"},
                            headers=h).status_code == 403, user.username
        assert client.patch(f"/api/v1/occurrences/{oid}", json={"status": "cancelled"},
                            headers=h).status_code == 403, user.username
        assert client.delete(f"/api/v1/sessions/{a.id}", headers=h).status_code == 403
    h = factory.headers(world.organizer)
    assert client.patch(f"/api/v1/sessions/{a.id}", json={"title": "x"}, headers=h).status_code \
        == 200
    # ...but not re-aim it outside his subtree.
    r = client.patch(f"/api/v1/sessions/{a.id}", json={"site_ids": [world.site_b.id]}, headers=h)
    assert r.status_code == 403


def test_site_screen_token_reads_its_site(client, world, db_session, make_session):
    from accounts.service import issue_site_token

    a = make_session()
    make_session(title="B", site_ids=[world.site_b.id], org_unit_ids=[], trainer_id=None)
    token = issue_site_token(db_session, world.site_a)
    db_session.commit()
    h = {"Authorization": f"Bearer {token}"}
    assert {o["session_id"] for o in client.get("/api/v1/occurrences", headers=h).get_json()} \
        == {a.id}
    assert client.post("/api/v1/sessions", json=_body(world), headers=h).status_code == 403
