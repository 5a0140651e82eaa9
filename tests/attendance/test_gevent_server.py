"""The production server: gunicorn with one gevent worker (gunicorn.conf.py)."""

from __future__ import annotations

import threading
import uuid

import pytest
import socketio
from sqlalchemy import create_engine, text

from bench.attendance import seed

pytestmark = pytest.mark.live


def test_a_screens_rapid_marks_are_stored_in_the_order_sent(tmp_path, live_server_factory):
    """Under gevent each event has its own greenlet, so a screen's next mark is read while
    the last one waits for its commit; the log must still hold them in the order sent."""
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"  # the LiveServer's own database file
    cfg = seed(url, sites=1, members=20, viewers=0)
    server = live_server_factory({"YUANJIAO_AUTO_MIGRATE": "0", "YUANJIAO_MEDIA": "off"},
                                 gunicorn=True)
    occ, site = cfg["occurrence_id"], cfg["site_ids"][0]
    member, others = cfg["member_ids"][0], cfg["member_ids"][1:]
    sio = socketio.Client(reconnection=False)
    sio.connect(server.url, namespaces=["/attendance"], transports=["websocket"],
                auth={"token": cfg["screen_tokens"][0]})
    try:
        assert sio.call("site:join", {"occurrence_id": occ, "site_id": site},
                        namespace="/attendance", timeout=30)["ok"]
        # One member in and out 15 times, other members' marks in between, all sent
        # without waiting for any ack.
        sent: list[tuple[str, str]] = []
        acks: dict[str, dict] = {}
        done = threading.Event()
        total = 45

        def ack_for(event_id: str):
            def cb(ack):
                acks[event_id] = ack
                if len(acks) == total:
                    done.set()
            return cb

        for i in range(total):
            event_id = uuid.uuid4().hex
            if i % 3 == 2:
                payload = {"member_ids": [others[i % len(others)]], "state": "present"}
            else:
                state = "present" if len([s for s in sent if s[0] != "other"]) % 2 == 0 \
                    else "checked_out"
                payload = {"member_ids": [member], "state": state}
                sent.append((state, event_id))
            if i % 3 == 2:
                sent.append(("other", event_id))
            sio.emit("roll_call:mark", {"occurrence_id": occ, "site_id": site,
                                        "event_id": event_id, **payload},
                     namespace="/attendance", callback=ack_for(event_id))
        assert done.wait(60), f"{len(acks)} of {total} acks"
        assert all(a["ok"] for a in acks.values()), [a for a in acks.values() if not a["ok"]]
    finally:
        sio.disconnect()

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT event_id, type FROM attendance_events WHERE occurrence_id = :o "
            "AND source = :s ORDER BY id"), {"o": occ, "s": f"site:{site}"}).all()
    engine.dispose()
    # A roll call stores one event per member, its id "<event_id>:<member_id>".
    stored = [(r.event_id.split(":")[0], r.type) for r in rows]
    assert [e for e, _ in stored] == [event_id for _, event_id in sent]
    mine = [t for e, t in stored if e in {e for s, e in sent if s != "other"}]
    assert mine == ["check_in", "check_out"] * 15


def test_the_gevent_worker_refuses_an_in_process_media_engine(tmp_path, live_server_factory):
    """aiortc's loop cannot run beside gevent: the worker says so at start."""
    with pytest.raises(RuntimeError) as failed:
        live_server_factory({"YUANJIAO_MEDIA": "inprocess"}, gunicorn=True)
    assert "YUANJIAO_MEDIA_NODES" in str(failed.value)
