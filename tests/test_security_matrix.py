"""Security, authorization across the URL map, the OpenAPI document and the socket event
table (issue 10).

- Every route refuses a caller without credentials unless it is listed as public here,
  and every GET route that names one organization's rows refuses another organization's
  users.
- Every route (and every OpenAPI operation, and every socket event) has a rule in `RULES`
  / `SOCKET_RULES`: an action of `core.policy` with the resource its path names, or a
  reason why any logged-in caller may call it (the service filters what he gets).
- The matrix: every route × every role (admin, organizer, trainer, site operator, site
  screen, member, and another organization's organizer) is refused where `can` refuses
  (every method; nothing is changed), and a GET is not refused (401/403) where `can`
  grants. The same for every socket event.

A new route or socket event without a rule fails this suite.
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


# --- the rules: every route and socket event ---------------------------------------------

#: Routes any logged-in caller may call (what he gets is his own or filtered), and why.
ANY_USER = "any logged-in caller"


def _occ(ids, db):
    from sessions.models import Occurrence

    return db.get(Occurrence, ids["occurrence_id"])


def _study(ids, db):
    from sessions.models import StudySession

    return db.get(StudySession, ids["session_id"])


def _site(ids, db):
    from org.models import Site

    return db.get(Site, ids["site_id"])


def _member(ids, db):
    from org.models import Member

    return db.get(Member, ids["member_id"])


def _user(ids, db):
    from accounts.models import User

    return db.get(User, ids["user_id"])


def _unit(ids, _db):
    return ids["org_unit_id"]


def _none(_ids, _db):
    return None


def _occ_site(ids, db):
    return (_occ(ids, db), _site(ids, db))


def _occ_member(ids, db):
    return (_occ(ids, db), ids["member_id"])


def _site_feed(ids, _db):
    return ("site", ids["site_id"])


#: endpoint -> rule, or {method: rule}. A rule: (action, resource from the fixture's ids),
#: a tuple of such rules ("any of"), a list ("all of"), PUBLIC's reason, or ANY_USER.
RULES: dict[str, object] = {
    "accounts.logout": ANY_USER,
    "attendance.AttendanceEvents": {"GET": ("attendance.view", _occ),
                                    "POST": ("roll_call.mark", _occ_site)},
    "attendance.AttendanceRecords": ("attendance.view", _occ),
    "attendance.Corrections": {"GET": ("attendance.manage", _occ),
                               "POST": ("attendance.correct", _occ_member)},
    "attendance.LeaveRequests": (("attendance.manage", _occ), ("makeup.study", _none)),
    "attendance.approve_leave": ("attendance.correct", _occ_member),
    "attendance.reject_leave": ("attendance.correct", _occ_member),
    "attendance.attendance_csv": ("attendance.view", _occ),
    "attendance.attendance_xlsx": ("attendance.view", _occ),
    "attendance.lock": ("attendance.lock", _occ),
    "attendance.unlock": ("attendance.unlock", _none),
    "attendance.makeup_progress": ("makeup.study", _none),
    "attendance.my_makeup_tasks": ("makeup.study", _none),
    "attendance_pages.absentees": ("attendance.manage", _occ),
    "attendance_pages.checkin": ("makeup.study", _none),
    "attendance_pages.dashboard": ("attendance.manage", _occ),
    "attendance_pages.headcount_json": ("attendance.view", _occ),
    "attendance_pages.snapshot_json": ("attendance.manage", _occ),
    "attendance_pages.sign_in_sheet": ("attendance.view", _occ),
    "attendance_pages.ledger": ("attendance.ledger", _none),
    "attendance_pages.reports": ("attendance.reports", _none),
    "attendance_pages.makeup_list": ("makeup.study", _none),
    "attendance_pages.makeup_play": ("makeup.study", _none),
    "attendance_pages.roll_call": ("roll_call.mark", _occ_site),
    "attendance_pages.roll_call_members": ("roll_call.mark", _occ_site),
    "attendance_pages.roll_call_state": ("roll_call.mark", _occ_site),
    "attendance_pages.screen": ("roll_call.mark", _occ_site),
    "auth.UserById": {"GET": ("user.read", _user), "PATCH": ("user.manage", _user)},
    "auth.Users": ("user.manage", _none),
    "auth.audit_log": ("audit.read", _none),
    "auth.clear_login_failures": ("user.manage", _user),
    "auth.revoke_user_tokens": ("user.manage", _user),
    "auth.issue_token": "the credentials are in the body",
    "auth.me": ANY_USER,
    "auth.revoke_token": ANY_USER,
    "live.LiveView": ("live.watch", _occ),
    "live.RecordingsView": ("live.watch", _occ),
    "live.StreamKeyView": ("live.publish", _occ),
    "live.pin_layer": ("live.manage", _occ),
    "org.tree": ("org.tree", _none),
    "org.unit_create": ("org.write", _none),
    "org.unit_update": ("org.write", _unit),
    "org.unit_delete": ("org.write", _unit),
    "org.sites": ("site.pages", _none),
    "org.site_create": ("org.write", _none),
    "org.site_edit": {"GET": [("site.pages", _none), ("site.read", _site)],
                      "POST": ("org.write", _unit)},
    "org.site_deactivate": ("org.write", _unit),
    "org.site_screen_token": ("site.operate", _site),
    "org.site_screen_renew": ("site.operate", _site),
    "org.site_screen_revoke": ("site.operate", _site),
    "org.members": ("member.pages", _none),
    "org.member_create": ("org.write", _none),
    "org.member_edit": {"GET": [("member.pages", _none), ("member.read", _member)],
                        "POST": ("org.write", _unit)},
    "org.member_import": ("org.write", _none),
    "org.member_import_confirm": ("org.write", _none),
    "org.member_transfer": ("org.write", _unit),
    "org.users": ("user.manage", _none),
    "org.user_create": ("user.manage", _none),
    "org.user_active": ("user.manage", _user),
    "org.user_password": ("user.manage", _user),
    "org.user_tokens_revoke": ("user.manage", _user),
    "org.user_unlock": ("user.manage", _user),
    "org_api.OrgUnits": {"GET": ("org.read", _none), "POST": ("org.write", _none)},
    "org_api.OrgUnitById": {"GET": ("org.read", _unit), "PATCH": ("org.write", _unit),
                            "DELETE": ("org.write", _unit)},
    "org_api.Sites": {"GET": ("site.read", _none), "POST": ("org.write", _none)},
    "org_api.SiteById": {"GET": ("site.read", _site), "PATCH": ("org.write", _unit),
                         "DELETE": ("org.write", _unit)},
    "org_api.ScreenTokens": ("site.operate", _site),
    "org_api.renew_screen_tokens": ("site.operate", _site),
    "org_api.Members": {"GET": ("member.read", _none), "POST": ("org.write", _none)},
    "org_api.MemberById": {"GET": ("member.read", _member), "PATCH": ("org.write", _unit)},
    "org_api.import_members": ("org.write", _none),
    "sessions.dashboard": ANY_USER,
    "sessions.calendar": ANY_USER,
    "sessions.feeds": ANY_USER,
    "sessions.index": ANY_USER,
    "sessions.detail": ("session.view", _study),
    "sessions.detail_ics": ("session.view", _study),
    "sessions.edit": ("session.edit", _study),
    "sessions.new": ("session.create", _none),
    "sessions.import_page": ("session.import", _none),
    "sessions_api.Sessions": {"GET": ANY_USER, "POST": ("session.create", _none)},
    "sessions_api.SessionById": {"GET": ("session.view", _study),
                                 "PATCH": ("session.edit", _study),
                                 "DELETE": ("session.edit", _study)},
    "sessions_api.OccurrenceById": {"GET": ("session.view", _study),
                                    "PATCH": ("session.edit", _study)},
    "sessions_api.occurrences": ANY_USER,
    "sessions_api.session_ics": ("session.view", _study),
    "sessions_api.session_occurrences": ("session.view", _study),
    "sessions_api.preview_session": ("session.create", _none),
    "sessions_api.import_sessions": ("session.import", _none),
    "sessions_api.calendar_url": ("feed.read", _site_feed),
    "sessions_api.revoke_calendar_url": ("feed.reset", _site_feed),
    "video.broadcast_page": ("live.publish", _occ),
    "video.recording_file": ("live.watch", _occ),
    "video.room_screen": ("site.screen", _site),
    "video.site_page": ("site.screen", _site),
    "video.watch_page": ("live.watch", _occ),
    "video_hls.hls_file": ("live.watch", _occ),
    "video_janus.play": ("live.watch", _occ),
    "video_janus.answer": "the edge token in the path is the credential (404 otherwise)",
    "video_janus.hang_up": "the edge token in the path is the credential (404 otherwise)",
    "video_janus.keepalive": "the edge token in the path is the credential (404 otherwise)",
    "video_signaling.whep_subscribe": ("live.watch", _occ),
    "video_signaling.whep_patch": "only the resource's owner: 404 for an unknown resource",
    "video_signaling.whep_resource": "only the resource's owner: 404 for an unknown resource",
    "video_signaling.whip_publish": ("live.publish", _occ),
    "video_signaling.whip_patch": "only the resource's owner: 404 for an unknown resource",
    "video_signaling.whip_resource": "only the resource's owner: 404 for an unknown resource",
}

#: /attendance and /live socket events -> rule (the payload names the fixture's rows).
SOCKET_RULES: dict[tuple[str, str], object] = {
    ("/attendance", "connect"): "any principal with a token or the login cookie",
    ("/attendance", "disconnect"): "its own connection",
    ("/attendance", "ping"): "its own connection",
    ("/attendance", "site:join"): ("roll_call.mark", _occ_site),
    ("/attendance", "roll_call:mark"): ("roll_call.mark", _occ_site),
    ("/attendance", "qr:token"): ("roll_call.mark", _occ_site),
    ("/attendance", "viewer:join"): ("makeup.study", _none),
    ("/attendance", "viewer:heartbeat"): ("makeup.study", _none),
    ("/attendance", "viewer:leave"): ("makeup.study", _none),
    ("/attendance", "dashboard:join"): ("attendance.manage", _occ),
    ("/attendance", "broadcast:join"): ("attendance.view", _occ),
    ("/live", "join"): ("live.watch", _occ),
}


def _rule_for(endpoint: str, method: str):
    rule = RULES.get(endpoint, PUBLIC.get(endpoint))
    if isinstance(rule, dict):
        return rule.get(method)
    return rule


def _is_action(rule) -> bool:
    return isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)


def _granted(rule, principal, ids, db) -> bool | None:
    """Whether `can` grants the rule (None: not an action, nothing to compare)."""
    from core import policy

    if _is_action(rule):
        return policy.can(principal, rule[0], rule[1](ids, db), session=db)
    if isinstance(rule, tuple):
        return any(_granted(r, principal, ids, db) for r in rule)
    if isinstance(rule, list):
        return all(_granted(r, principal, ids, db) for r in rule)
    return None


def _actions_of(rule) -> list[str]:
    if _is_action(rule):
        return [rule[0]]
    if isinstance(rule, (tuple, list)):
        return [a for r in rule for a in _actions_of(r)]
    if isinstance(rule, dict):
        return [a for r in rule.values() for a in _actions_of(r)]
    return []


def test_every_route_has_a_rule(app):
    """The URL map: every endpoint, every method, has a rule; no rule names a route that
    is gone, or an action nobody registered."""
    from core import policy

    missing = []
    endpoints = set()
    for rule in app.url_map.iter_rules():
        endpoints.add(rule.endpoint)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if _rule_for(rule.endpoint, method) is None:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == [], "routes without a rule in RULES"
    assert set(RULES) - endpoints == set(), "rules of routes that are gone"
    unknown = {a for r in [*RULES.values(), *SOCKET_RULES.values()] for a in _actions_of(r)
               } - set(policy.actions())
    assert unknown == set()


def test_every_openapi_operation_has_a_rule(app, client):
    """The OpenAPI document: every operation is a route of the URL map with a rule."""
    spec = client.get("/api/openapi.json").json
    by_path: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            by_path[(path, method.lower())] = rule.endpoint
    missing = []
    count = 0
    for path, item in spec["paths"].items():
        full = (spec.get("basePath") or "") + path
        for method in item:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            count += 1
            endpoint = by_path.get((full, method)) or by_path.get((path, method))
            if endpoint is None or _rule_for(endpoint, method.upper()) is None:
                missing.append(f"{method.upper()} {path}")
    assert count > 40
    assert missing == []


def test_every_socket_event_has_a_rule(app):
    from extensions import socketio

    handlers = {(ns, event) for ns, events in socketio.server.handlers.items()
                for event in events}
    assert handlers - set(SOCKET_RULES) == set(), "socket events without a rule"
    assert set(SOCKET_RULES) - handlers == set(), "rules of socket events that are gone"


# --- the matrix ----------------------------------------------------------------------------


ROLES = ("admin", "organizer", "trainer", "site_operator", "site_screen", "member",
         "organizer_b")


@pytest.fixture
def everyone(factory, db_session, two_orgs):
    """The fixture's organization A seen by every role, and B's organizer."""
    from accounts.models import User
    from accounts.service import issue_site_token
    from core.principals import SiteScreen
    from org.models import Member, OrgUnit, Site
    from sessions.models import StudySession

    ids, callers = two_orgs
    study = db_session.get(StudySession, ids["session_id"])
    member_a = db_session.get(Member, ids["member_id"])
    unit_a = db_session.get(OrgUnit, ids["unit_id"])
    site_a = db_session.get(Site, ids["site_id"])
    users = {
        "admin": factory.user("admin", username="admin-x"),
        "organizer": factory.user("organizer", username="org-a", org_unit_id=unit_a.id),
        "trainer": db_session.get(User, study.trainer_id),
        "site_operator": db_session.get(User, ids["user_id"]),
        "member": factory.user("member", username="m-a", member_id=member_a.id),
        "organizer_b": callers["organizer_b"],
    }
    screen_token = issue_site_token(db_session, site_a)
    db_session.commit()
    principals = {**users, "site_screen": SiteScreen(site_id=site_a.id)}
    return ids, users, principals, screen_token


def _client_for(app, factory, role, users, screen_token):
    """A test client logged in as `role` (a cookie), or a screen's bearer token."""
    client = app.test_client()
    if role == "site_screen":
        return client, {"Authorization": f"Bearer {screen_token}"}
    with client.session_transaction() as s:
        s["_user_id"] = users[role].get_id()
        s["_fresh"] = True
    return client, {}


def _refused(response) -> bool:
    location = response.headers.get("Location", "")
    return response.status_code in REFUSED or (
        response.status_code == 302 and "/login" in location)


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_every_route_answers_as_the_policy_says(app, factory, db_session, everyone,
                                                          role):
    """Where `can` refuses, every method is refused (nothing changes); where it grants, a
    GET is not refused with 401 or 403."""
    ids, users, principals, screen_token = everyone
    client, headers = _client_for(app, factory, role, users, screen_token)
    principal = principals[role]
    failures = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.websocket:
            continue
        values = _args(rule, ids)
        assert values is not None, rule.rule
        path = rule.rule
        for name, value in values.items():
            path = re.sub(r"<(?:[^:<>]+:)?" + name + r">", str(value), path)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            granted = _granted(_rule_for(rule.endpoint, method), principal, ids, db_session)
            db_session.rollback()
            if granted is None or (granted and method != "GET"):
                continue
            if granted and role == "site_screen" and not path.startswith("/api/"):
                continue  # pages take a screen's token as ?token=, not as a bearer
            response = client.open(path, method=method, headers=headers)
            if not granted and not _refused(response):
                failures.append(f"{method} {path} ({rule.endpoint}) -> "
                                f"{response.status_code}, the policy refuses {role}")
            if granted and response.status_code in (401, 403):
                failures.append(f"{method} {path} ({rule.endpoint}) -> "
                                f"{response.status_code}, the policy grants {role}")
    assert failures == []


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_every_socket_event_answers_as_the_policy_says(
        app, factory, db_session, socket_client_factory, everyone, role):
    """Each event with a well-formed payload naming organization A's rows: refused with an
    error ack where `can` refuses, not refused (forbidden, login) where it grants."""
    ids, users, principals, screen_token = everyone
    principal = principals[role]
    token = screen_token if role == "site_screen" else factory.token(users[role])
    db_session.commit()
    payload = {"occurrence_id": ids["occurrence_id"], "site_id": ids["site_id"],
               "member_ids": [ids["member_id"]], "state": "present", "token": token}
    failures = []
    for (namespace, event), rule in SOCKET_RULES.items():
        granted = _granted(rule, principal, ids, db_session)
        db_session.rollback()
        if granted is None:
            continue
        sc = socket_client_factory(namespace=namespace, auth={"token": token})
        ack = sc.emit(event, {**payload, "event_id": f"matrix-{role}-{event}"},
                      namespace=namespace, callback=True)
        sc.disconnect(namespace=namespace)
        error = (ack or {}).get("error")
        if not granted and (ack or {}).get("ok", True):
            failures.append(f"{namespace} {event}: {ack!r}, the policy refuses {role}")
        if granted and error in ("forbidden", "login_required", "invalid_token"):
            failures.append(f"{namespace} {event}: {error}, the policy grants {role}")
    assert failures == []
