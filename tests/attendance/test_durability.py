"""A real server killed with SIGKILL after a burst of acknowledged check-ins loses nothing."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import uuid

import pytest
import requests
import socketio
from sqlalchemy import create_engine, text

from bench.attendance import seed

pytestmark = pytest.mark.slow


def stored_event_ids(url: str, occurrence_id: int) -> list[tuple[str, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT source, event_id FROM attendance_events WHERE occurrence_id = :o "
            "AND type = 'check_in'"), {"o": occurrence_id}).all()
    engine.dispose()
    return [(r[0], r[1]) for r in rows]


def queued_times(url: str, occurrence_id: int) -> list[dt.datetime]:
    """The stored times of the marks queued offline (their own, not the server's)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT client_time, payload FROM attendance_events WHERE occurrence_id = :o "
            "AND type = 'check_in' AND client_time IS NOT NULL"), {"o": occurrence_id}).all()
    engine.dispose()
    assert all('"queued": true' in str(r[1]).lower() for r in rows)
    return [dt.datetime.fromisoformat(str(r[0])).replace(tzinfo=None) for r in rows]


def test_sigkill_after_acknowledged_check_ins_loses_nothing(tmp_path, live_server_factory):
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"  # the LiveServer's own database file
    cfg = seed(url, sites=2, members=80, viewers=0)
    env = {"YUANJIAO_AUTO_MIGRATE": "0", "YUANJIAO_MEDIA": "off"}
    server = live_server_factory(env)
    occ, (site_a, site_b) = cfg["occurrence_id"], cfg["site_ids"]
    members = cfg["member_ids"]
    acked: list[tuple[str, str]] = []

    # API check-ins from one site screen, concurrently
    headers = {"Authorization": f"Bearer {cfg['screen_tokens'][0]}"}

    def post(member_id: int) -> None:
        event_id = uuid.uuid4().hex
        r = requests.post(f"{server.url}/api/v1/occurrences/{occ}/attendance-events",
                          json={"event_id": event_id, "type": "check_in",
                                "member_id": member_id, "site_id": site_a},
                          headers=headers, timeout=30)
        if r.status_code == 201:
            acked.append((f"api:site:{site_a}", event_id))

    threads = [threading.Thread(target=post, args=(m,)) for m in members[:30]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # socket roll calls from the other screen, each acknowledged
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/attendance"], transports=["websocket"],
                auth={"token": cfg["screen_tokens"][1]})
    assert sio.call("site:join", {"occurrence_id": occ, "site_id": site_b},
                    namespace="/attendance", timeout=30)["ok"]
    for m in members[30:60]:
        event_id = uuid.uuid4().hex
        ack = sio.call("roll_call:mark", {"occurrence_id": occ, "site_id": site_b,
                                          "member_ids": [m], "state": "present",
                                          "event_id": event_id}, namespace="/attendance",
                       timeout=30)
        if ack["ok"]:
            acked.append((f"site:{site_b}", f"{event_id}:{m}"))
    # marks the operator's phone queued while offline, sent on reconnect with their time
    queued_at = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).replace(microsecond=0)
    queued: list[dict] = []
    for m in members[60:70]:
        mark = {"occurrence_id": occ, "site_id": site_b, "member_ids": [m],
                "state": "present", "event_id": uuid.uuid4().hex, "queued": True,
                "at": queued_at.isoformat()}
        ack = sio.call("roll_call:mark", mark, namespace="/attendance", timeout=30)
        if ack["ok"] and ack["stored"] == 1:
            acked.append((f"site:{site_b}", f"{mark['event_id']}:{m}"))
            queued.append(mark)
    assert len(acked) == 70

    server.stop(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL
    sio.disconnect()

    stored = stored_event_ids(url, occ)
    assert sorted(stored) == sorted(acked)  # every acknowledged event, exactly once
    assert queued_times(url, occ) == [queued_at.replace(tzinfo=None)] * 10

    # restart on the same database: attendance goes on, a retry is still recognised
    server.start()
    r = requests.post(f"{server.url}/api/v1/occurrences/{occ}/attendance-events",
                      json={"event_id": acked[0][1], "type": "check_in",
                            "member_id": members[0], "site_id": site_a},
                      headers=headers, timeout=30)
    assert r.status_code == 200
    r = requests.post(f"{server.url}/api/v1/occurrences/{occ}/attendance-events",
                      json={"event_id": "after-restart", "type": "check_in",
                            "member_id": members[70], "site_id": site_a},
                      headers=headers, timeout=30)
    assert r.status_code == 201
    # the phone, unsure whether its queued marks arrived, sends them again: stored once
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/attendance"], transports=["websocket"],
                auth={"token": cfg["screen_tokens"][1]})
    assert sio.call("roll_call:mark", queued[0], namespace="/attendance",
                    timeout=30)["repeated"] == 1
    sio.disconnect()
    assert len(stored_event_ids(url, occ)) == 71
