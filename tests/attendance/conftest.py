"""Attendance fixtures: a branch with two sites, members, users and a live occurrence."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from attendance.models import AttendanceEvent
from core.types import utcnow


@dataclass
class Scene:
    """Everything an attendance test needs, with ids (rows expire across requests)."""

    unit: Any
    other_unit: Any
    site_a: Any
    site_b: Any
    foreign_site: Any
    members: list
    outsider: Any
    study: Any
    occurrence: Any
    foreign_occurrence: Any
    users: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def make_session(db_session, *, title: str, start: dt.datetime, minutes: int, sites=(),
                 units=(), trainer=None):
    from sessions.models import Occurrence, StudySession

    study = StudySession(title=title, kind="party_lesson", starts_at=start,
                         duration_minutes=minutes, late_after_minutes=10,
                         present_threshold_percent=80, trainer_id=trainer.id if trainer else None)
    study.sites = list(sites)
    study.org_units = list(units)
    db_session.add(study)
    db_session.flush()
    occ = Occurrence(session_id=study.id, original_start=start, starts_at=start,
                     ends_at=start + dt.timedelta(minutes=minutes))
    db_session.add(occ)
    db_session.flush()
    return study, occ


#: One cheap hash for every scene user: scrypt per user would dominate the test time.
CHEAP_HASH = generate_password_hash("password123", method="pbkdf2:sha256:1000")


def make_user(db_session, role: str, username: str, **scope):
    """A user row with a cheap password hash ("password123")."""
    from accounts.models import User

    user = User(username=username, password_hash=CHEAP_HASH, role=role, display_name=username,
                **scope)
    db_session.add(user)
    db_session.flush()
    return user


@pytest.fixture
def scene(db_session, factory) -> Scene:
    """A branch with sites A and B and four members (two per site), another branch with its
    own site and occurrence, and users of every role; the occurrence started 5 minutes ago.
    """
    from accounts.service import issue_site_token, issue_token

    unit = factory.org_unit("第一支部")
    other = factory.org_unit("第二支部")
    site_a = factory.site(unit, "一号会议室")
    site_b = factory.site(unit, "二号会议室")
    foreign_site = factory.site(other, "外单位会议室")
    members = [factory.member(unit, site_a, "张三"), factory.member(unit, site_a, "李四"),
               factory.member(unit, site_b, "王五"), factory.member(unit, site_b, "赵六")]
    outsider = factory.member(other, foreign_site, "外人")
    trainer = make_user(db_session, "trainer", "trainer")
    start = utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    study, occ = make_session(db_session, title="党史学习", start=start, minutes=60,
                              sites=[site_a, site_b], units=[unit], trainer=trainer)
    _, foreign_occ = make_session(db_session, title="外单位学习", start=start, minutes=60,
                                  sites=[foreign_site], units=[other])
    users = {
        "admin": make_user(db_session, "admin", "admin"),
        "organizer": make_user(db_session, "organizer", "organizer", org_unit_id=unit.id),
        "other_organizer": make_user(db_session, "organizer", "organizer2",
                                     org_unit_id=other.id),
        "operator_a": make_user(db_session, "site_operator", "op_a", site_id=site_a.id),
        "operator_b": make_user(db_session, "site_operator", "op_b", site_id=site_b.id),
        "member0": make_user(db_session, "member", "m0", member_id=members[0].id),
        "member1": make_user(db_session, "member", "m1", member_id=members[1].id),
        "outsider": make_user(db_session, "member", "outsider", member_id=outsider.id),
        "trainer": trainer,
    }
    tokens = {name: issue_token(db_session, user) for name, user in users.items()}
    tokens["screen_a"] = issue_site_token(db_session, site_a)
    tokens["screen_b"] = issue_site_token(db_session, site_b)
    db_session.commit()
    return Scene(unit, other, site_a, site_b, foreign_site, members, outsider, study, occ,
                 foreign_occ, users, tokens)


@pytest.fixture
def att_socket(socket_client_factory, scene):
    """A connected /attendance test client for one of the scene's tokens."""

    def make(who: str | None):
        auth = {"token": scene.tokens[who]} if who else None
        return socket_client_factory(namespace="/attendance", auth=auth)

    return make


def emit(sc, event: str, data: Any) -> dict:
    """Emit with an ack callback and return the ack."""
    return sc.emit(event, data, namespace="/attendance", callback=True)


def received(sc, name: str) -> list[dict]:
    """What `sc` received of event `name`; "attendance:update" gives the single updates
    of the `attendance:updates` lists, once what waits in the outbox has been sent."""
    if name != "attendance:update":
        return [m["args"][0] for m in sc.get_received("/attendance") if m["name"] == name]
    from attendance import live

    live.outbox(sc._app).flush()
    return [u for m in sc.get_received("/attendance") if m["name"] == "attendance:updates"
            for u in m["args"][0]["updates"]]


# Shared by the attendance tests.
#: The scene's occurrence is live: locking it needs the explicit early flag.
EARLY = {"early": True, "reason": "测试：提前审核"}
SECRET = "test-secret"


def login(client, username: str) -> None:
    r = client.post("/login", data={"username": username, "password": "password123"})
    assert r.status_code == 302


def events_url(scene) -> str:
    return f"/api/v1/occurrences/{scene.occurrence.id}/attendance-events"


def body(scene, member=0, site=None, event_id="e1", type_="check_in", **extra):
    return {"event_id": event_id, "type": type_, "member_id": scene.members[member].id,
            "site_id": (site or scene.site_a).id, **extra}


def stored(db_session) -> int:
    db_session.expire_all()
    return db_session.scalar(select(func.count()).select_from(AttendanceEvent))
