"""Security, bad input (issue 10, finding 6): no request answers 500.

Every route of the URL map is called with the classes of input that used to raise:
integers past 2^31 and 2^63 in the path, the query and the body; dates in the years 1
and 9999; wrong types. Bodies follow the OpenAPI document, field by field. Socket events
get no payload, numbers, and dicts where lists of ids belong.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

HUGE = [2**31, 2**63, 2**64 + 7, -(2**63) - 1]
DATES = ["0001-01-01", "9999-12-31", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00",
         "9999-12-31T23:59:59-12:00"]
QUERY_KEYS = ["page", "page_size", "site", "site_id", "unit_id", "org_unit_id", "year",
              "member_id", "date", "start", "end", "from", "to", "after", "before", "token"]
SKIP = ("static", "socketio", "api-docs", "openapi", "swagger")


def _rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(SKIP) or rule.websocket:
            continue
        yield rule


def _paths(rule) -> list[str]:
    """The rule's path with each integer argument too large, and with a plain 1."""
    out = []
    args = sorted(rule.arguments)
    if not args:
        return [rule.rule]
    for value in [*HUGE[:3], 1]:
        path = rule.rule
        for arg in args:
            conv = rule._converters[arg].__class__.__name__
            filler = str(value) if "Integer" in conv else "x" if value != 1 else "1"
            path = re.sub(r"<(?:[^:<>]+:)?" + arg + r">", filler, path)
        out.append(path)
    return out


@pytest.fixture
def admin(factory, db_session):
    unit = factory.org_unit("支部")
    site = factory.site(unit, "会议室")
    member = factory.member(unit, site, "张三")
    import datetime as dt

    from sessions.models import Occurrence, StudySession

    start = dt.datetime(2030, 3, 4, 11, 0, tzinfo=dt.UTC)
    study = StudySession(title="讲座", kind="party_lesson", starts_at=start, duration_minutes=60)
    study.sites.append(site)
    study.org_units.append(unit)
    db_session.add(study)
    db_session.flush()
    db_session.add(Occurrence(session_id=study.id, original_start=start, starts_at=start,
                              ends_at=start + dt.timedelta(hours=1)))
    user = factory.user("admin", username="fuzz-admin", password="fuzz-pass-123")
    headers = factory.headers(user)
    del member
    return headers


def _call(client, what: str, failures: list[str], *args, **kwargs) -> None:
    """One request; a 5xx (503 aside: media off) or an exception is a failure."""
    try:
        response = client.open(*args, **kwargs)
    except Exception as exc:  # the test app propagates what would be a 500
        failures.append(f"{what} -> {type(exc).__name__}: {str(exc)[:120]}")
        return
    if response.status_code >= 500 and response.status_code != 503:
        failures.append(f"{what} -> {response.status_code}")


def test_no_route_answers_500_for_huge_ids_and_bad_dates(app, client, admin):
    failures: list[str] = []
    for rule in _rules(app):
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        for path, method in itertools.product(_paths(rule), methods):
            for key, value in [(None, None), *[(k, v) for k in QUERY_KEYS
                                               for v in (HUGE[1], DATES[0], DATES[3])]]:
                query = {} if key is None else {key: value}
                if method != "GET" and key is not None:
                    continue
                _call(client, f"{method} {path} {query}", failures, path, method=method,
                      headers=admin, query_string=query, json={} if method != "GET" else None)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])


def _schema_for(spec: dict, ref: dict) -> dict:
    if "$ref" in ref:
        name = ref["$ref"].rsplit("/", 1)[1]
        return spec["components"]["schemas"][name]
    return ref


def _hostile_bodies(spec: dict, schema: dict) -> list[dict[str, Any]]:
    """One body per property and hostile value, the other properties left out."""
    schema = _schema_for(spec, schema)
    bodies: list[dict[str, Any]] = [{}, {"x": 1}]
    for name, prop in (schema.get("properties") or {}).items():
        prop = _schema_for(spec, prop)
        kind = prop.get("type")
        values: list[Any] = [None, 1e308, {"a": 1}, [1], "x" * 5000, True]
        if kind == "integer" or (kind == "array" and prop.get("items", {}).get("type")
                                 == "integer"):
            values += [*HUGE, [2**64], [{"a": 1}]]
        if prop.get("format") in ("date-time", "date") or kind == "string":
            values += DATES
        for value in values:
            bodies.append({name: value})
    return bodies


def test_no_api_operation_answers_500_for_hostile_bodies(app, client, admin):
    spec = client.get("/api/openapi.json").json
    failures: list[str] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if method not in ("post", "put", "patch"):
                continue
            content = (op.get("requestBody") or {}).get("content") or {}
            schema = (content.get("application/json") or {}).get("schema")
            if schema is None:
                continue
            for concrete in {re.sub(r"\{[^}]+\}", "1", path)}:
                for body in _hostile_bodies(spec, schema):
                    _call(client, f"{method.upper()} {concrete} {str(body)[:80]}", failures,
                          concrete, method=method.upper(), headers=admin, json=body)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])


def test_pages_with_bad_dates(app, client, factory, db_session):
    factory.user("admin", username="page-admin", password="page-pass-123")
    db_session.commit()
    assert client.post("/login", data={"username": "page-admin",
                                       "password": "page-pass-123"}).status_code == 302
    failures: list[str] = []
    for rule in _rules(app):
        if rule.rule.startswith(("/api/", "/whip", "/whep")) or "GET" not in rule.methods:
            continue
        for path in _paths(rule):
            for key in ("date", "start", "end", "year", "month", "page", "unit_id", "site_id"):
                for value in (DATES[0], DATES[1], DATES[3], HUGE[1]):
                    _call(client, f"GET {path} {key}={value}", failures, path,
                          query_string={key: value})
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])


SOCKET_PAYLOADS: list[Any] = [
    None, 1e308, "x", [1], 7,
    {"occurrence_id": 1e308, "site_id": 1},
    {"occurrence_id": 2**64, "site_id": 2**64},
    {"occurrence_id": {"a": 1}, "site_id": [1]},
    {"occurrence_id": True, "site_id": "1e3"},
    {"occurrence_id": float("inf"), "site_id": float("nan")},
    {"occurrence_id": 1, "site_id": 1, "member_ids": [{"a": 1}], "state": "present",
     "event_id": "e1"},
    {"occurrence_id": 1, "site_id": 1, "member_ids": [1e308, 2**64], "state": "present",
     "event_id": "e2"},
    {"occurrence_id": 1, "site_id": 1, "member_ids": {"a": 1}, "state": {"x": 1},
     "event_id": {"x": 1}},
    {"occurrence_id": 1, "event_id": ["x"]},
]
NO_PAYLOAD = object()


def _socket_events(app):
    from attendance.events import HANDLERS

    events = [("/attendance", name) for name in HANDLERS if name not in ("connect",
                                                                          "disconnect")]
    return [*events, ("/live", "join")]


def test_socket_payloads_of_the_wrong_type_are_refused_by_ack(app, admin, socket_client_factory,
                                                               caplog):
    token = admin["Authorization"].split()[1]
    failures: list[str] = []
    for namespace, event in _socket_events(app):
        sc = socket_client_factory(namespace=namespace, auth={"token": token})
        assert sc.is_connected(namespace)
        for payload in [NO_PAYLOAD, *SOCKET_PAYLOADS]:
            caplog.clear()
            if payload is NO_PAYLOAD:
                ack = sc.emit(event, namespace=namespace, callback=True)
            else:
                ack = sc.emit(event, payload, namespace=namespace, callback=True)
            what = f"{namespace} {event} {str(payload)[:60] if payload is not NO_PAYLOAD else '-'}"
            if event == "ping":
                continue
            always_wrong = payload is NO_PAYLOAD or SOCKET_PAYLOADS.index(payload) < 10
            if not isinstance(ack, dict) or (always_wrong and ack.get("ok") is not False):
                failures.append(f"{what} -> {str(ack)[:100]}")
            elif ack.get("error") == "internal_error":
                failures.append(f"{what} -> internal_error")
            if any(r.levelname == "ERROR" for r in caplog.records):
                failures.append(f"{what} -> logged an exception")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])


def test_specific_answers(app, client, admin):
    """Not only no 500: a path id past the range is 404, a date in year 1 or 9999 is 422."""
    assert client.get(f"/api/v1/sessions/{2**63}", headers=admin).status_code == 404
    assert client.get(f"/api/v1/occurrences/{2**31}", headers=admin).status_code == 404
    assert client.get("/api/v1/occurrences/1", headers=admin).status_code == 200
    for value in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00"):
        listed = client.get("/api/v1/occurrences", headers=admin, query_string={"from": value})
        assert listed.status_code == 422, value
        moved = client.patch("/api/v1/occurrences/1", headers=admin, json={"starts_at": value})
        assert moved.status_code == 422, value
        body = {"title": "讲座", "kind": "party_lesson", "duration_minutes": 60,
                "starts_at": value, "timezone": "Asia/Shanghai", "site_ids": [1],
                "org_unit_ids": [1]}
        created = client.post("/api/v1/sessions", headers=admin, json=body)
        assert created.status_code == 422, value
        assert created.json["error"] == "validation_error"
    huge = client.patch("/api/v1/sessions/1", headers=admin, json={"trainer_id": 2**64})
    assert huge.status_code == 422
