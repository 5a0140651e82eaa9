"""Smoke test of a running stack (`make stack-smoke`, after `make stack`).

    YUANJIAO_ADMIN_USERNAME=admin YUANJIAO_ADMIN_PASSWORD=... .venv/bin/python deploy/smoke.py

Through nginx only (YUANJIAO_STACK_URL, default http://127.0.0.1:8080): makes a lecture
that runs now at a new site with one member; a room screen (long-polling, then upgraded)
and a dashboard (websocket) connect; a roll-call check-in sent by the screen must reach
the dashboard; then a synthetic publisher goes live over WHIP and the member fetches the
HLS playlist and a segment; the newest segment's EXT-X-PROGRAM-DATE-TIME must be within
6 s of the clock. Prints what it measured; exits non-zero on the first failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import queue
import re
import sys
import time
import uuid
from typing import NoReturn

import requests
import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

BASE = os.environ.get("YUANJIAO_STACK_URL", "http://127.0.0.1:8080").rstrip("/")
NS = "/attendance"


def fail(message: str) -> NoReturn:
    print(f"smoke: FAIL {message}", flush=True)
    raise SystemExit(1)


def api(method: str, path: str, token: str, expect: int = 200, **kw):
    r = requests.request(method, BASE + path, headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kw)
    if r.status_code != expect:
        fail(f"{method} {path}: {r.status_code} {r.text[:300]}")
    return r.json() if "json" in r.headers.get("Content-Type", "") else r


def token_for(username: str, password: str) -> str:
    r = requests.post(BASE + "/api/v1/auth/token",
                      json={"username": username, "password": password}, timeout=30)
    if r.status_code != 200:
        fail(f"login {username}: {r.status_code} {r.text[:200]}")
    return r.json()["token"]


def world(admin: str) -> dict:
    tag = uuid.uuid4().hex[:8]
    unit = api("POST", "/api/v1/org-units", admin, 201,
               json={"name": f"冒烟测试{tag}", "kind": "committee", "parent_id": None})
    site = api("POST", "/api/v1/sites", admin, 201, json={
        "name": f"冒烟会议室{tag}", "org_unit_id": unit["id"], "timezone": "Asia/Shanghai"})
    member = api("POST", "/api/v1/members", admin, 201, json={
        "name": "冒烟党员", "member_no": f"S{tag}", "org_unit_id": unit["id"],
        "home_site_id": site["id"], "category": "full"})
    password = uuid.uuid4().hex
    api("POST", "/api/v1/users", admin, 201, json={
        "username": f"smoke{tag}", "password": password, "role": "member",
        "display_name": "冒烟党员", "member_id": member["id"]})
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)).replace(microsecond=0)
    session = api("POST", "/api/v1/sessions", admin, 201, json={
        "title": f"冒烟讲座{tag}", "kind": "party_history_lecture",
        "starts_at": start.isoformat(), "duration_minutes": 60, "timezone": "Asia/Shanghai",
        "site_ids": [site["id"]], "org_unit_ids": [unit["id"]]})
    [occ] = api("GET", f"/api/v1/sessions/{session['id']}/occurrences", admin)
    screen = api("POST", f"/api/v1/sites/{site['id']}/screen-tokens", admin, 201)["token"]
    return {"occurrence_id": occ["id"], "site_id": site["id"], "member_id": member["id"],
            "screen": screen, "member_token": token_for(f"smoke{tag}", password)}


def sockets(w: dict, admin: str) -> None:
    got: queue.Queue = queue.Queue()
    dashboard = socketio.Client(reconnection=False)
    dashboard.on("attendance:update", lambda d: got.put(d), namespace=NS)
    dashboard.connect(BASE, namespaces=[NS], transports=["websocket"],
                      auth={"token": admin}, wait_timeout=10)
    screen = socketio.Client(reconnection=False)
    screen.connect(BASE, namespaces=[NS], transports=["polling", "websocket"],
                   auth={"token": w["screen"]}, wait_timeout=10)
    try:
        ref = {"occurrence_id": w["occurrence_id"], "site_id": w["site_id"]}
        if not dashboard.call("dashboard:join", {"occurrence_id": w["occurrence_id"]},
                              namespace=NS, timeout=15).get("ok"):
            fail("dashboard:join refused")
        if not screen.call("site:join", ref, namespace=NS, timeout=15).get("ok"):
            fail("site:join refused")
        sent = time.monotonic()
        ack = screen.call("roll_call:mark", {**ref, "member_ids": [w["member_id"]],
                                             "state": "present", "event_id": uuid.uuid4().hex},
                          namespace=NS, timeout=15)
        if not ack.get("ok") or ack.get("stored") != 1:
            fail(f"check-in not stored: {ack}")
        try:
            update = got.get(timeout=10)
        except queue.Empty:
            fail("the dashboard did not hear the check-in")
        print(f"smoke: check-in reached the dashboard in "
              f"{(time.monotonic() - sent) * 1000:.0f} ms (screen on {screen.transport()}, "
              f"update {update['type']})", flush=True)
    finally:
        screen.disconnect()
        dashboard.disconnect()


PDT = re.compile(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)")


def newest_date(playlist: str) -> dt.datetime | None:
    stamps = PDT.findall(playlist)
    if not stamps:
        return None
    return dt.datetime.fromisoformat(re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", stamps[-1]))


async def hls(w: dict, admin: str) -> None:
    occ = w["occurrence_id"]
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    r = await loop.run_in_executor(None, lambda: requests.post(
        f"{BASE}/whip/{occ}", data=pc.localDescription.sdp, timeout=30,
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/sdp"}))
    if r.status_code != 201:
        fail(f"WHIP: {r.status_code} {r.text[:300]}")
    location = r.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    started = time.monotonic()
    member = {"Authorization": f"Bearer {w['member_token']}"}
    url = f"{BASE}/live/{occ}/hls/index.m3u8"
    try:
        playlist = None
        while time.monotonic() - started < 30:
            got = await loop.run_in_executor(None, lambda: requests.get(url, headers=member,
                                                                        timeout=10))
            if got.status_code == 200 and len(PDT.findall(got.text)) >= 2:
                playlist = got.text
                break
            await asyncio.sleep(0.25)
        if playlist is None:
            fail("no HLS playlist with two segments within 30 s")
        print(f"smoke: HLS playlist after {time.monotonic() - started:.1f} s", flush=True)
        lags = []
        for _ in range(5):
            got = await loop.run_in_executor(None, lambda: requests.get(url, headers=member,
                                                                        timeout=10))
            newest = newest_date(got.text)
            if newest is None:
                fail("the playlist lost its segments' dates")
            lags.append((dt.datetime.now(dt.UTC) - newest).total_seconds())
            await asyncio.sleep(1)
        print(f"smoke: newest segment's date behind the clock: "
              f"{', '.join(f'{x:.2f}' for x in lags)} s", flush=True)
        if max(abs(x) for x in lags) > 6:
            fail("the newest segment is more than 6 s from the clock")
        name = re.findall(r"^(seg\d+\.ts)$", got.text, re.M)[-1]
        seg = await loop.run_in_executor(None, lambda: requests.get(
            f"{BASE}/live/{occ}/hls/{name}", headers=member, timeout=10))
        if seg.status_code != 200 or seg.headers.get("Content-Type") != "video/mp2t" \
                or len(seg.content) < 1000:
            fail(f"segment {name}: {seg.status_code} {seg.headers.get('Content-Type')}")
        print(f"smoke: segment {name}: {len(seg.content)} bytes", flush=True)
        anonymous = await loop.run_in_executor(None, lambda: requests.get(url, timeout=10))
        if anonymous.status_code != 401:
            fail(f"anonymous playlist: {anonymous.status_code}")
        await edge_site(w, admin)
    finally:
        await loop.run_in_executor(None, lambda: requests.delete(
            BASE + location, headers={"Authorization": f"Bearer {admin}"}, timeout=30))
        await pc.close()


async def edge_site(w: dict, admin: str) -> None:
    """With YUANJIAO_ORIGIN_MAX_SITES=0 the site watches from a Janus edge: our signalling
    relays the edge's offer; frames arrive; the live API names the edge (`served_by`)."""
    occ, loop = w["occurrence_id"], asyncio.get_running_loop()
    screen = {"Authorization": f"Bearer {w['screen']}"}
    started = time.monotonic()
    r = await loop.run_in_executor(None, lambda: requests.post(
        f"{BASE}/live/{occ}/play?site={w['site_id']}", headers=screen, timeout=30))
    if r.status_code != 200:
        fail(f"play: {r.status_code} {r.text[:300]}")
    body = r.json()
    if body["via"] != "edge":
        print("smoke: the origin serves the site (start the stack with "
              "YUANJIAO_ORIGIN_MAX_SITES=0 to check the edges)", flush=True)
        return
    pc = RTCPeerConnection()
    frames = asyncio.Event()
    got = {"n": 0}
    pulls: list[asyncio.Task] = []

    @pc.on("track")
    def _track(track):
        async def pull():
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                if track.kind == "video":
                    got["n"] += 1
                    if got["n"] >= 30:
                        frames.set()
        pulls.append(asyncio.ensure_future(pull()))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["offer"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    a = await loop.run_in_executor(None, lambda: requests.post(
        f"{BASE}{body['location']}/answer", data=pc.localDescription.sdp, timeout=30,
        headers={**screen, "Content-Type": "application/sdp"}))
    if a.status_code != 204:
        fail(f"answer: {a.status_code} {a.text[:300]}")
    try:
        await asyncio.wait_for(frames.wait(), 20)
    except TimeoutError:
        fail(f"no frames from edge {body['edge']} in 20 s ({got['n']} frames)")
    print(f"smoke: site plays from edge {body['edge']}: 30 frames after "
          f"{time.monotonic() - started:.1f} s", flush=True)
    live = api("GET", f"/api/v1/occurrences/{occ}/live", admin)
    served = [s.get("served_by") for s in live["sites"] if s.get("site_id") == w["site_id"]]
    if served != [body["edge"]]:
        fail(f"live API served_by {served}, expected [{body['edge']}]")
    print(f"smoke: live API: site served_by {served[0]}", flush=True)
    await loop.run_in_executor(None, lambda: requests.delete(
        f"{BASE}{body['location']}", headers=screen, timeout=30))
    await pc.close()


def main() -> None:
    user = os.environ.get("YUANJIAO_ADMIN_USERNAME")
    password = os.environ.get("YUANJIAO_ADMIN_PASSWORD")
    if not user or not password:
        fail("set YUANJIAO_ADMIN_USERNAME and YUANJIAO_ADMIN_PASSWORD (as for make stack)")
    admin = token_for(user, password)
    w = world(admin)
    sockets(w, admin)
    asyncio.run(hls(w, admin))
    print("smoke: OK", flush=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
