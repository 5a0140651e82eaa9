"""Security, authorization across the URL map (issue 10): every route refuses a caller
without credentials unless it is listed as public here, and every GET route that names
one organization's rows refuses another organization's users. A new route that answers
anonymously or across organizations fails this test until it is listed, with a reason.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

#: Endpoints that answer without a login, and why.
PUBLIC = {
    "static": "static files",
    "accounts.login": "the login form",
    "sessions.feed": "the signed feed token in the path is the credential",
    "api-docs.openapi_json": "the API description",
    "api-docs.openapi_swagger_ui": "the API browser",
    "socketio_transport": "never served: the Engine.IO middleware answers first",
    "socketio_websocket": "never served",
    "sessions.index": "redirects",
    "favicon": "the site's icon",
    "attendance_pages.roll_call_worker": "the roll call's service worker script (no data)",
    "api_health": "the load balancer's health check: ok and whether Redis is reachable",
}
#: Refusals: 401 (API), a redirect to the login page, 403, 404 (ids are checked before
#: the caller on a few routes, which reveals only that an id exists), 405, and the body
#: checks that run before the caller's (400, 415, 422: nothing read, nothing changed).
REFUSED = {400, 401, 403, 404, 405, 415, 422}


def _args(rule, ids: dict[str, int]) -> dict[str, object] | None:
    out: dict[str, object] = {}
    for arg in rule.arguments:
        if arg in ids:
            out[arg] = ids[arg]
        elif arg == "owner_id":
            out[arg] = ids["site_id"]
        elif arg in ("token", "filename", "owner", "resource_id", "name"):
            out[arg] = {"owner": "sites", "resource_id": "0123abcd",
                        "name": "index.m3u8"}.get(arg, "x")
        else:
            return None
    return out


@pytest.fixture
def two_orgs(factory, db_session):
    """Organization A with rows of every kind; organization B's users."""
    from attendance.models import LeaveRequest, MakeupTask
    from sessions.models import Occurrence, StudySession
    from video.models import Recording

    unit_a, unit_b = factory.org_unit("甲支部"), factory.org_unit("乙支部")
    site_a, site_b = factory.site(unit_a, "甲会议室"), factory.site(unit_b, "乙会议室")
    member_a = factory.member(unit_a, site_a, "甲党员")
    member_b = factory.member(unit_b, site_b, "乙党员")
    trainer = factory.user("trainer", username="trainer-a")
    start = dt.datetime(2030, 3, 4, 11, 0, tzinfo=dt.UTC)
    study = StudySession(title="甲讲座", kind="party_lesson", starts_at=start,
                         duration_minutes=60, trainer_id=trainer.id)
    study.sites.append(site_a)
    study.org_units.append(unit_a)
    db_session.add(study)
    db_session.flush()
    occ = Occurrence(session_id=study.id, original_start=start, starts_at=start,
                     ends_at=start + dt.timedelta(hours=1))
    db_session.add(occ)
    db_session.flush()
    leave = LeaveRequest(occurrence_id=occ.id, member_id=member_a.id, reason="出差",
                         filed_at=start)
    task = MakeupTask(occurrence_id=occ.id, member_id=member_a.id, created_at=start)
    recording = Recording(occurrence_id=occ.id, path="x.webm", mime_type="video/webm",
                          started_at=start, status="complete")
    db_session.add_all([leave, task, recording])
    user_a = factory.user("site_operator", username="op-a", site_id=site_a.id)
    db_session.flush()
    ids = {"occurrence_id": occ.id, "session_id": study.id, "site_id": site_a.id,
           "member_id": member_a.id, "unit_id": unit_a.id, "org_unit_id": unit_a.id,
           "user_id": user_a.id, "recording_id": recording.id, "leave_id": leave.id,
           "task_id": task.id, "id": unit_a.id}
    callers = {
        "organizer_b": factory.user("organizer", username="org-b", org_unit_id=unit_b.id),
        "operator_b": factory.user("site_operator", username="op-b", site_id=site_b.id),
        "member_b": factory.user("member", username="m-b", member_id=member_b.id),
    }
    db_session.commit()
    return ids, callers


def test_every_route_refuses_anonymous_callers(app, client, two_orgs):
    ids, _ = two_orgs
    failures = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.websocket:
            continue
        values = _args(rule, ids)
        if values is None:
            failures.append(f"{rule.rule}: unknown path argument, extend _args")
            continue
        path = rule.rule
        for name, value in values.items():
            path = re.sub(r"<(?:[^:<>]+:)?" + name + r">", str(value), path)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            location = response.headers.get("Location", "")
            if response.status_code in REFUSED or (
                    response.status_code == 302 and "/login" in location):
                continue
            failures.append(f"{method} {path} -> {response.status_code} anonymously")
    assert not failures, "\n".join(failures)


#: GET routes another organization's users may read, and why.
SHARED: dict[str, str] = {}


@pytest.mark.parametrize("who", ["organizer_b", "operator_b", "member_b"])
def test_get_routes_refuse_another_organizations_users(app, client, factory, two_orgs, who):
    ids, callers = two_orgs
    headers = factory.headers(callers[who])
    failures = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or not rule.arguments or rule.endpoint in PUBLIC \
                or rule.endpoint in SHARED:
            continue
        values = _args(rule, ids)
        if values is None:
            continue
        path = rule.rule
        for name, value in values.items():
            path = re.sub(r"<(?:[^:<>]+:)?" + name + r">", str(value), path)
        response = client.get(path, headers=headers)
        if response.status_code == 200 and response.is_json and response.json in ([], {}):
            continue  # a list filtered to the caller's own rows: nothing of A's
        if response.status_code == 200:
            failures.append(f"GET {path} ({rule.endpoint}) -> 200 for {who}")
    assert not failures, "\n".join(failures)
