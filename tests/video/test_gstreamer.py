"""A third-party WHIP publisher: GStreamer's webrtcbin (RSA DTLS certificate) publishing
VP8 to /whip, relayed to a WHEP subscriber that decodes its frames."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from OpenSSL import crypto
from werkzeug.serving import make_server

from accounts.service import issue_site_token
from tests.conftest import free_port
from tests.video.conftest import run, wait_for
from tests.video.peers import Subscriber
from tests.video.test_signaling import bearer, stream_key, whep_signal
from video import media

GST_WHIP = Path(__file__).with_name("gst_whip.py")
CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
         "from gi.repository import Gst; Gst.init(None);"
         "import sys; sys.exit(0 if Gst.ElementFactory.find('webrtcbin') and "
         "Gst.ElementFactory.find('nicesrc') and Gst.ElementFactory.find('vp8enc') else 1)")


def _gst_python() -> str | None:
    """A Python with GStreamer's webrtcbin (CI: Debian's python3-gi,
    gir1.2-gst-plugins-bad-1.0, gstreamer1.0-plugins-bad, gstreamer1.0-nice)."""
    for python in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", CHECK], capture_output=True).returncode == 0:
            return python
    return None


@pytest.mark.media
def test_gstreamer_webrtcbin_publisher_is_relayed(app, client, db_session, factory, scene):
    python = _gst_python()
    if python is None:
        pytest.skip("GStreamer's webrtcbin (gstreamer1.0-plugins-bad, -nice, python3-gi) "
                    "is missing")
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    site_token = issue_site_token(db_session, scene.site)
    db_session.commit()
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    publisher = subprocess.Popen(
        [python, str(GST_WHIP), f"http://127.0.0.1:{port}/whip/{occ}", key, "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = media.backend(app)
    try:
        async def watch():
            assert await wait_for(lambda: occ in engine.broadcasts and (
                engine.broadcasts[occ].publisher_pc is not None
                and engine.broadcasts[occ].publisher_pc.connectionState == "connected"), 30)
            pc = engine.broadcasts[occ].publisher_pc
            transport = pc.getTransceivers()[0].receiver.transport
            peer_key = transport._ssl.get_peer_certificate().get_pubkey().type()
            site = Subscriber(audio=False)
            await site.start(whep_signal(client, occ, bearer(site_token), {}))
            ok = await site.wait_frames(30, 20)
            frames = site.frames
            await site.close()
            return peer_key, ok, frames

        peer_key, ok, frames = run(watch())
        out, err = publisher.communicate(timeout=90)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        server.shutdown()
    result = json.loads(out.strip().splitlines()[-1])
    assert result.get("status") == 201, (result, err[-2000:])
    assert peer_key == crypto.TYPE_RSA  # webrtcbin's certificate: RSA
    assert result["setup"] == ["passive"]
    assert ok, f"the site decoded {frames} frames from GStreamer"
    assert result["connection"] == "connected"
    assert result["deleted"] == 200
