"""A third-party WHEP player from npm (@eyevinn/webrtc-player), on a page of another origin
allowed by YUANJIAO_CORS_ORIGINS, plays a lecture published over WHIP: frames verified."""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.browser.test_live import obs_publish, setup_lecture
from tests.conftest import stop_client_loop, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.media]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "whep_player"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bundle(out: Path) -> None:
    """esbuild (npm, a dev dependency) bundles the player for a plain <script>."""
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    assert esbuild.exists(), "run `make setup-dev` (npm ci installs the dev dependencies)"
    shutil.copy(HERE / "index.html", out / "index.html")
    subprocess.run([str(esbuild), str(HERE / "entry.js"), "--bundle", "--format=iife",
                    "--platform=browser", "--log-level=error",
                    f"--outfile={out / 'player.js'}"], check=True, cwd=ROOT, timeout=120)


def test_an_npm_whep_player_on_another_origin_plays_the_lecture(tmp_path,
                                                                 live_server_factory, browser):
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    server = live_server_factory({"YUANJIAO_CORS_ORIGINS": origin})
    lecture = setup_lecture(server)
    occ, base = lecture["occurrence"], server.url
    site_token = lecture["tokens"][0]

    site = tmp_path / "studio"
    site.mkdir()
    _bundle(site)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    key = lecture["api"]("POST", f"/api/v1/occurrences/{occ}/stream-key")["stream_key"]
    client_loop = asyncio.new_event_loop()
    runner = threading.Thread(target=client_loop.run_forever, daemon=True)
    runner.start()

    def on_client(coro):
        return asyncio.run_coroutine_threadsafe(coro, client_loop).result(60)

    ctx = browser.new_context()
    try:
        publisher, locations = on_client(obs_publish(base, occ, key))
        page = ctx.new_page()
        page.goto(f"{origin}/index.html?whep={base}/whep/{occ}&token={site_token}")
        wait_for_js(page, "() => window.framesDecoded && window.framesDecoded() > 30",
                    timeout=30_000)
        assert page.evaluate("window.playerErrors") == []
        assert page.evaluate("document.querySelector('video').videoWidth") > 0
        # the server saw a cross-origin subscriber: the live API lists the site
        live = requests.get(f"{base}/api/v1/occurrences/{occ}/live",
                            headers={"Authorization": f"Bearer {lecture['admin']}"}, timeout=10)
        assert any(s.get("site_id") == lecture["sites"][0]["id"] for s in live.json()["sites"])
        requests.delete(base + locations["whip"], headers={"Authorization": f"Bearer {key}"},
                        timeout=30).raise_for_status()
        on_client(publisher.close())
    finally:
        ctx.close()
        httpd.shutdown()
        httpd.server_close()
        stop_client_loop(client_loop, runner)
