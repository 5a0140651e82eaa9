"""TURN for sites behind NAT: coturn with `use-auth-secret`, time-limited credentials from
the app ("TURN REST API"), handed to pages and in WHIP/WHEP Link headers; a real aiortc
peer allocates a relay through a real coturn with them, and not with stale or forged ones."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from accounts.service import issue_site_token
from tests.conftest import ROOT, free_port
from video.ice import ice_servers, turn_credentials

SECRET = "north-oilfield"


def test_credential_is_the_hmac_of_the_expiring_username():
    username, credential = turn_credentials(SECRET, "site7", 3600, now=1_700_000_000)
    assert username == "1700003600:site7"
    # `printf %s 1700003600:site7 | openssl dgst -sha1 -hmac north-oilfield -binary | base64`
    assert credential == "Qzoi+PmZBO7sLAc/X6mz5frTZ88="


def test_ice_servers_add_turn_with_fresh_credentials_only_when_configured():
    config = {"YUANJIAO_ICE_SERVERS": [{"urls": "stun:stun.example:3478"}],
              "YUANJIAO_TURN_URLS": [], "YUANJIAO_TURN_SECRET": SECRET,
              "YUANJIAO_TURN_TTL_SECONDS": 600}
    assert ice_servers(config, "u1") == [{"urls": "stun:stun.example:3478"}]
    config["YUANJIAO_TURN_URLS"] = ["turn:turn.example:3478?transport=udp"]
    servers = ice_servers(config, "u1", now=1_000)
    assert servers[1]["urls"] == ["turn:turn.example:3478?transport=udp"]
    assert servers[1]["username"] == "1600:u1"
    assert servers[1]["credential"] == turn_credentials(SECRET, "u1", 600, now=1_000)[1]
    config["YUANJIAO_TURN_SECRET"] = ""
    assert len(ice_servers(config, "u1")) == 1


def test_pages_and_whep_links_carry_the_turn_credentials(app, client, factory, scene,
                                                       db_session):
    app.config.update(YUANJIAO_TURN_URLS=["turn:127.0.0.1:3478?transport=udp"],
                      YUANJIAO_TURN_SECRET=SECRET, YUANJIAO_TURN_TTL_SECONDS=600)
    from video.http import ice_server_links

    with app.test_request_context():
        links = ice_server_links(with_credentials=True)
        anonymous = ice_server_links(with_credentials=False)
    assert len(links) == 1
    assert links[0].startswith('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; '
                               'username="')
    assert 'credential-type="password"' in links[0]
    expiry = int(links[0].split('username="')[1].split(":")[0])
    assert time.time() + 590 < expiry <= time.time() + 600
    assert anonymous == []  # an OPTIONS request gets no credentials
    token = issue_site_token(db_session, scene.site)
    db_session.commit()
    page = client.get(f"/live/{scene.occurrence.id}/site/{scene.site.id}?token={token}")
    assert page.status_code == 200
    config = re.search(r'<script type="application/json" id="live-config">(.*?)</script>',
                       page.get_data(as_text=True), re.S).group(1)
    turn = [s for s in json.loads(config)["iceServers"] if "username" in s]
    assert turn[0]["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    assert turn[0]["username"].endswith(":screen")
    assert turn[0]["credential"] == turn_credentials(
        SECRET, "screen", 0, now=float(turn[0]["username"].split(":")[0]))[1]


def _stack_module():
    spec = importlib.util.spec_from_file_location("deploy_stack", ROOT / "deploy" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def coturn(tmp_path):
    if not shutil.which("turnserver") and not Path("/usr/bin/turnserver").exists():
        pytest.skip("coturn not installed (make stack-deps)")
    port = free_port()
    base = 50000 + (port % 50) * 200
    command = _stack_module().render_turn(tmp_path / "turn", SECRET, port,
                                          ports=(base, base + 199))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # no readiness probe without credentials; allocation retries anyway
    assert proc.poll() is None, (tmp_path / "turn" / "turnserver.log").read_text()
    yield {"url": f"turn:127.0.0.1:{port}?transport=udp", "log": tmp_path / "turn"}
    proc.terminate()
    proc.wait(10)


async def _relay_candidates(url: str, username: str, credential: str) -> list[str]:
    """Candidates an aiortc peer gathers with this TURN server (typ relay: allocated)."""
    pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[
        RTCIceServer(urls=url, username=username, credential=credential)]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return [line for line in pc.localDescription.sdp.splitlines()
                if line.startswith("a=candidate:") and "typ relay" in line]
    finally:
        await pc.close()


@pytest.mark.media
def test_a_real_aiortc_peer_allocates_through_coturn_with_the_apps_credentials(coturn):
    good = turn_credentials(SECRET, "site7", 600)
    stale = turn_credentials(SECRET, "site7", -60)
    forged = turn_credentials("not-the-secret", "site7", 600)
    relays = asyncio.run(_relay_candidates(coturn["url"], *good))
    assert relays, "no relay candidate: coturn refused the app's credentials"
    assert " 127.0.0.1 " in relays[0]
    for refused in (stale, forged):
        assert asyncio.run(_relay_candidates(coturn["url"], *refused)) == []
