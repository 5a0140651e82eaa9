"""WHIP/WHEP as third-party clients see them (RFC 9725): CORS, OPTIONS, Link, ETag, PATCH,
and publishers whose DTLS certificate is RSA (GStreamer's webrtcbin) or ECDSA (browsers)."""

from __future__ import annotations

import re

import pytest
from aiortc.rtcdtlstransport import RTCCertificate, generate_certificate
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts.service import issue_site_token
from tests.video.conftest import in_thread, run
from tests.video.peers import Publisher, Subscriber
from tests.video.test_signaling import SDP, bearer, stream_key, whep_signal
from video import media

STUDIO = "http://studio.example"
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


@pytest.fixture
def app_config(app_config):
    app_config["YUANJIAO_CORS_ORIGINS"] = [STUDIO]
    return app_config


class RsaCertificate(RTCCertificate):
    """A certificate like GStreamer webrtcbin's: RSA 2048, and OpenSSL's ECDHE suites for
    both key kinds (aiortc's own context offers ECDSA suites only)."""

    @classmethod
    def generate(cls) -> RsaCertificate:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key=key, cert=generate_certificate(key))

    def _create_ssl_context(self, srtp_profiles):
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:"
                            b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:"
                            b"ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA")
        return ctx


def test_preflight_for_listed_origins_only(client, scene):
    occ = scene.occurrence.id
    for path in (f"/whip/{occ}", f"/whep/{occ}"):
        response = client.options(path, headers={
            "Origin": STUDIO, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == STUDIO
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"POST", "PATCH", "DELETE", "OPTIONS"}
        allowed = {h.strip().lower() for h in
                   response.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"authorization", "content-type", "if-match"}
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", "Link", "ETag"} <= exposed
        assert "Origin" in response.headers["Vary"]
        assert response.headers["Accept-Post"] == "application/sdp"
        assert "Access-Control-Allow-Credentials" not in response.headers
        other = client.options(path, headers={
            "Origin": "http://other.example", "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in other.headers
        # The app's own origin always may.
        own = client.options(path, headers={
            "Origin": "http://localhost", "Access-Control-Request-Method": "POST"})
        assert own.headers["Access-Control-Allow-Origin"] == "http://localhost"
    resource = client.options(f"/whep/{occ}/abc", headers={
        "Origin": STUDIO, "Access-Control-Request-Method": "PATCH"})
    assert resource.status_code == 204
    assert resource.headers["Allow"] == "PATCH, DELETE, OPTIONS"
    assert resource.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"


def test_no_origin_listed_by_default(app, client, scene):
    app.config["YUANJIAO_CORS_ORIGINS"] = []
    response = client.options(f"/whip/{scene.occurrence.id}", headers={
        "Origin": STUDIO, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


def test_every_405_names_what_is_allowed(client, scene):
    occ = scene.occurrence.id
    for method, path, allowed in (
            ("GET", f"/whip/{occ}", {"POST", "OPTIONS"}),
            ("PUT", f"/whep/{occ}", {"POST", "OPTIONS"}),
            ("GET", f"/whip/{occ}/abc", {"PATCH", "DELETE", "OPTIONS"}),
            ("POST", f"/whep/{occ}/abc", {"PATCH", "DELETE", "OPTIONS"})):
        response = client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
        assert response.json["error"] == "method_not_allowed"


def test_whep_before_the_broadcast_is_503_with_retry_after_for_other_origins(
        client, db_session, scene):
    occ = scene.occurrence.id
    token = issue_site_token(db_session, scene.site)
    db_session.commit()

    async def offer():
        sub = Subscriber()
        await sub.pc.setLocalDescription(await sub.pc.createOffer())
        sdp = sub.pc.localDescription.sdp
        await sub.close()
        return sdp

    response = client.post(f"/whep/{occ}", data=run(offer()),
                           headers={**bearer(token), "Origin": STUDIO})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Access-Control-Allow-Origin"] == STUDIO
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


def _publish_and_watch(client, db_session, factory, scene, certificate, *, trickle=False,
                       setup=None):
    """Publish with `certificate`, watch from a site; the WHIP response and frame counts."""
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    db_session.commit()
    seen: dict = {}
    engine = media.backend(client.application)

    async def scenario():
        publisher = Publisher(audio=False, width=320, height=240, certificate=certificate)

        async def signal(sdp):
            body = sdp
            if setup:  # an offerer that chose its DTLS role
                body = body.replace("a=setup:actpass", f"a=setup:{setup}")
            if trickle:  # post before gathering, as a trickling client does
                body = "".join(line + "\r\n" for line in sdp.splitlines()
                               if not line.startswith(("a=candidate:", "a=end-of-candidates")))
            response = await in_thread(client.post, f"/whip/{occ}", data=body,
                                       headers={**bearer(key), "Origin": STUDIO})
            assert response.status_code == 201, response.get_data(as_text=True)
            seen["whip"] = response
            return response.get_data(as_text=True), response.headers["Location"]

        await publisher.start(signal)
        if trickle:
            offer = publisher.pc.localDescription.sdp
            fragment = "\r\n".join(
                [line for line in offer.splitlines()
                 if line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
                + ["m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0"]
                + [line for line in offer.splitlines() if line.startswith("a=candidate:")]
                + ["a=end-of-candidates"]) + "\r\n"
            location = seen["whip"].headers["Location"]
            etag = seen["whip"].headers["ETag"]
            patched = await in_thread(client.patch, location, data=fragment,
                                      headers={**bearer(key), **FRAG, "If-Match": etag})
            assert patched.status_code == 204, patched.get_data(as_text=True)
            assert patched.headers["ETag"] == etag
            seen["patched_candidates"] = {
                (c.ip, c.port) for c in engine.broadcasts[occ].publisher_pc.getTransceivers()[0]
                .receiver.transport.transport.getRemoteCandidates()}
            seen["offered_candidates"] = {
                (parts[4], int(parts[5])) for parts in
                (line.split() for line in offer.splitlines() if line.startswith("a=candidate:"))}
        site = Subscriber(audio=False)
        await site.start(whep_signal(client, occ, bearer(site_token), seen))
        ok = await site.wait_frames(20, 15)
        state = publisher.pc.connectionState
        for peer in (site, publisher):
            await peer.close()
        return ok, site.frames, state

    ok, frames, state = run(scenario())
    return seen, ok, frames, state


@pytest.mark.media
@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_publishers_with_rsa_or_ecdsa_certificates_are_relayed(
        client, db_session, factory, scene, kind):
    certificate = RsaCertificate.generate() if kind == "rsa" else \
        RTCCertificate.generateCertificate()
    seen, ok, frames, state = _publish_and_watch(client, db_session, factory, scene,
                                                 certificate)
    assert state == "connected"
    assert ok, f"the site decoded {frames} frames from the {kind} publisher"
    # The engine is the DTLS server: it chooses an ECDSA suite for its own certificate.
    answer = seen["whip"].get_data(as_text=True)
    assert set(re.findall(r"a=setup:(\w+)", answer)) == {"passive"}


@pytest.mark.media
def test_an_offer_that_chose_passive_gets_an_active_answer(client, db_session, factory, scene):
    seen, ok, frames, state = _publish_and_watch(client, db_session, factory, scene, None,
                                                 setup="passive")
    answer = seen["whip"].get_data(as_text=True)
    assert set(re.findall(r"a=setup:(\w+)", answer)) == {"active"}
    assert state == "connected"
    assert ok, frames


@pytest.mark.media
def test_whip_201_headers_and_trickle_ice_by_patch(app, client, db_session, factory, scene):
    app.config["YUANJIAO_ICE_SERVERS"] = [
        {"urls": "stun:127.0.0.1:3478"},
        {"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "studio",
         "credential": "s3cret"}]
    seen, ok, frames, state = _publish_and_watch(client, db_session, factory, scene, None,
                                                 trickle=True)
    created = seen["whip"]
    links = created.headers.getlist("Link")
    assert '<stun:127.0.0.1:3478>; rel="ice-server"' in links
    assert ('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="studio"; '
            'credential="s3cret"; credential-type="password"') in links
    assert re.fullmatch(r'"[0-9a-f]{20}"', created.headers["ETag"])
    assert created.headers["Access-Control-Allow-Origin"] == STUDIO
    # The candidates came only by PATCH (the offer had none) and reached the ICE agent.
    assert seen["offered_candidates"]
    assert seen["offered_candidates"] <= seen["patched_candidates"]
    assert ok, frames
    assert state == "connected"
    # The OPTIONS of an endpoint names only servers without credentials (it is anonymous).
    options = client.options(f"/whip/{scene.occurrence.id}")
    assert options.headers.getlist("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']


@pytest.mark.media
def test_patch_refusals(client, db_session, factory, scene):
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    db_session.commit()

    async def scenario():
        publisher = Publisher(audio=False, width=320, height=240)
        seen = {}

        async def signal(sdp):
            response = await in_thread(client.post, f"/whip/{occ}", data=sdp,
                                       headers=bearer(key))
            seen["response"] = response
            return response.get_data(as_text=True), response.headers["Location"]

        await publisher.start(signal)
        location, etag = seen["response"].headers["Location"], seen["response"].headers["ETag"]
        ufrag = re.search(r"a=ice-ufrag:(\S+)", publisher.pc.localDescription.sdp).group(1)
        candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
        frag = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:x\r\na=mid:0\r\n{candidate}\r\n"
        out = {
            "wrong_type": await in_thread(client.patch, location, data=frag,
                                          headers={**bearer(key), **SDP}),
            "stale_etag": await in_thread(client.patch, location, data=frag, headers={
                **bearer(key), **FRAG, "If-Match": '"0000"'}),
            "restart": await in_thread(client.patch, location, headers={
                **bearer(key), **FRAG, "If-Match": "*"},
                data="a=ice-ufrag:newfrag\r\na=ice-pwd:newpassword0123456789\r\n"),
            "new_ufrag": await in_thread(client.patch, location, headers={
                **bearer(key), **FRAG, "If-Match": etag},
                data="a=ice-ufrag:newfrag\r\na=ice-pwd:newpassword0123456789\r\n"),
            "no_key": await in_thread(client.patch, location, data=frag, headers=FRAG),
            "unknown": await in_thread(client.patch, f"/whip/{occ}/ffff", data=frag,
                                       headers={**bearer(key), **FRAG}),
            "garbage": await in_thread(client.patch, location, data="hello",
                                       headers={**bearer(key), **FRAG, "If-Match": etag}),
            "ok": await in_thread(client.patch, location, data=frag,
                                  headers={**bearer(key), **FRAG, "If-Match": etag}),
        }
        await publisher.close()
        return out

    out = run(scenario())
    assert out["wrong_type"].status_code == 415
    assert out["stale_etag"].status_code == 412
    assert out["stale_etag"].json["error"] == "precondition_failed"
    assert out["restart"].status_code == 422
    assert out["restart"].json["error"] == "ice_restart_unsupported"
    assert out["new_ufrag"].status_code == 422
    assert out["no_key"].status_code == 401
    assert out["unknown"].status_code == 404
    assert out["garbage"].status_code == 400
    assert out["ok"].status_code == 204


def test_cors_origins_from_the_environment(monkeypatch):
    import config

    monkeypatch.setenv("YUANJIAO_CORS_ORIGINS", "http://studio.example, https://player.example/")
    assert config.from_environment()["YUANJIAO_CORS_ORIGINS"] == [
        "http://studio.example", "https://player.example"]
    assert config.default_config("/tmp")["YUANJIAO_CORS_ORIGINS"] == []
