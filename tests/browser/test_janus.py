"""Sites past the origin watch from Janus edges (Debian's janus, two on loopback): the
same site page plays, the live API names the edge, and a killed edge's site moves."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.browser.test_live import assert_playing, obs_publish, setup_lecture, wait_state
from tests.conftest import ROOT, free_port, login_page, stop_client_loop

pytestmark = [pytest.mark.browser, pytest.mark.media]

SECRET, ADMIN_KEY = "edge-test-secret", "edge-test-admin-key"


def _stack_module():
    spec = importlib.util.spec_from_file_location("deploy_stack", ROOT / "deploy" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def edges(tmp_path):
    """Two Janus edges of this test's own: {name: (url, process)}."""
    if not shutil.which("janus") and not Path("/usr/bin/janus").exists():
        if os.environ.get("CI"):
            pytest.fail("janus not installed; .ci/run installs it (make stack-deps)")
        pytest.skip("janus not installed (make stack-deps)")
    stack = _stack_module()
    started = {}
    base = 40000 + (os.getpid() % 10) * 2000  # away from make stack's ports
    for i in range(2):
        port = free_port()
        folder = tmp_path / f"janus{i + 1}"
        command = stack.render_janus(folder, i, f"edge{i + 1}", SECRET, ADMIN_KEY, port,
                                     port_base=base)
        with (tmp_path / f"janus{i + 1}.log").open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started[f"127.0.0.1:{port}"] = (f"http://127.0.0.1:{port}/janus", proc)
    for url, proc in started.values():
        for _ in range(100):
            try:
                if requests.get(url + "/info", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail(f"janus did not answer at {url} (exit {proc.poll()})")
    yield started
    for _url, proc in started.values():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_sites_watch_from_edges_and_move_when_one_dies(live_server_factory, browser, edges):
    server = live_server_factory({
        "YUANJIAO_MEDIA": "inprocess",
        "YUANJIAO_JANUS_EDGES": ",".join(url for url, _ in edges.values()),
        "YUANJIAO_JANUS_SECRET": SECRET, "YUANJIAO_JANUS_ADMIN_KEY": ADMIN_KEY,
        "YUANJIAO_ORIGIN_MAX_SITES": "0"})
    lecture = setup_lecture(server)
    occ, base = lecture["occurrence"], server.url
    key = lecture["api"]("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]

    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    contexts = []
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        pages = []
        for site, token in zip(lecture["sites"], lecture["tokens"], strict=True):
            ctx = browser.new_context()
            contexts.append(ctx)
            page = ctx.new_page()
            page.goto(f"{base}/live/{occ}/site/{site['id']}?token={token}")
            wait_state(page, "live", timeout=30_000)
            assert_playing(page)
            pages.append(page)
        served = {p.evaluate("document.body.dataset.servedBy") for p in pages}
        # The two sites are spread over the two edges (the fewest viewers first).
        assert served == set(edges), served
        live = server.api("GET", f"/api/v1/occurrences/{occ}/live", lecture["admin"]).json()
        by_site = {s["site_id"]: s["served_by"] for s in live["sites"]}
        assert set(by_site) == {s["id"] for s in lecture["sites"]}, live["sites"]
        assert set(by_site.values()) == set(edges), by_site
        assert "origin" not in by_site.values()

        # One edge dies: its site plays again from the other one.
        victim_page = pages[0]
        victim = victim_page.evaluate("document.body.dataset.servedBy")
        edges[victim][1].kill()
        killed = time.monotonic()
        victim_page.wait_for_function(
            "(dead) => document.body.dataset.servedBy && document.body.dataset.servedBy !== dead"
            " && document.body.dataset.liveState === 'live'", arg=victim, timeout=30_000)
        moved = time.monotonic() - killed
        assert_playing(victim_page)
        print(f"site moved from dead edge {victim} and plays again after {moved:.1f} s")
        assert moved <= 5, moved

        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        for ctx in contexts:
            ctx.close()
        stop_client_loop(client_loop, thread)


def test_a_member_watching_from_an_edge_holds_a_media_session(live_server_factory, browser,
                                                             edges):
    """Media-bound presence through an edge: the member's page plays from Janus, his
    viewer:join counts; once his page has gone (hang-up), a viewer:join is refused."""
    from tests.browser.test_hls import _member
    from tests.conftest import wait_for_js
    from tests.test_scale import Sock

    server = live_server_factory({
        "YUANJIAO_MEDIA": "inprocess",
        "YUANJIAO_JANUS_EDGES": ",".join(url for url, _ in edges.values()),
        "YUANJIAO_JANUS_SECRET": SECRET, "YUANJIAO_JANUS_ADMIN_KEY": ADMIN_KEY,
        "YUANJIAO_ORIGIN_MAX_SITES": "0"})
    lecture = setup_lecture(server, starts_in_minutes=-1)
    occ, base, api = lecture["occurrence"], server.url, lecture["api"]
    member = _member(api, lecture["sites"][0], "王建国", "DY0001", "wang")
    key = api("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]

    client_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=client_loop.run_forever, daemon=True)
    thread.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    ctx = browser.new_context()
    sock = None
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        page = ctx.new_page()
        login_page(page, base, "wang", "member-pass")
        page.goto(f"{base}/live/{occ}/watch")
        wait_state(page, "live", timeout=30_000)
        assert_playing(page)
        assert page.evaluate("document.body.dataset.servedBy") in edges
        # His page's viewer:join was accepted: the edge session is his media session.
        wait_for_js(page, "() => document.querySelector('.att-viewer-state')"
                    ".textContent === document.querySelector('.att-viewer-state')"
                    ".dataset.watching", timeout=15_000)
        live = server.api("GET", f"/api/v1/occurrences/{occ}/live", lecture["admin"]).json()
        mine = [s for s in live["sites"] if s.get("kind") == "member"]
        assert len(mine) == 1, live["sites"]
        assert mine[0]["served_by"] in edges
        rows = {r["member_id"]: r for r in api("GET", f"/api/v1/occurrences/{occ}/attendance")}
        assert rows[member["id"]]["first_join"] is not None
        page.goto("about:blank")  # pagehide: the page hangs up its edge session
        sock = Sock(base, server.token("wang", "member-pass"))
        refused = None
        for attempt in range(50):
            refused = sock.call("viewer:join", {"occurrence_id": occ,
                                                "event_id": f"after-hangup-{attempt}"})
            if not refused["ok"]:
                break
            time.sleep(0.2)
        assert refused["ok"] is False, refused
        assert refused["error"] == "no_media_session", refused
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        if sock is not None:
            sock.close()
        ctx.close()
        stop_client_loop(client_loop, thread)
