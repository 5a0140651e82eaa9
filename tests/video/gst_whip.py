"""A WHIP publisher built on GStreamer's webrtcbin, as simple-whip-client and OBS-like
encoders use it (its DTLS certificate is RSA). Run with a Python that has `gi` and
Debian's gstreamer1.0-plugins-bad and gstreamer1.0-nice:

    python3 gst_whip.py URL BEARER SECONDS

Publishes VP8 (videotestsrc) for SECONDS after the answer, then DELETEs the resource.
Prints one JSON line: {"status": POST status, "location": ..., "setup": the answer's
a=setup values, "ice" and "connection": final states, "deleted": DELETE status}.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import urljoin

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = (
    "webrtcbin name=send bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
    "! videoconvert ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 "
    "! rtpvp8pay pt=96 ! application/x-rtp,media=video,encoding-name=VP8,payload=96 ! send."
)


def http(method: str, url: str, token: str, body: bytes | None = None,
         content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def main() -> None:
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE)
    webrtc = pipeline.get_by_name("send")
    loop = GLib.MainLoop()
    out: dict[str, object] = {}

    def fail(message: str) -> None:
        out["error"] = message
        loop.quit()

    def on_answer(answer_sdp: str) -> None:
        _ok, sdp = GstSdp.SDPMessage.new_from_text(answer_sdp)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        GLib.timeout_add(int(seconds * 1000), finish)

    def finish() -> bool:
        out["ice"] = webrtc.get_property("ice-connection-state").value_nick
        out["connection"] = webrtc.get_property("connection-state").value_nick
        if out.get("location"):
            status, _, _ = http("DELETE", urljoin(url, out["location"]), token)
            out["deleted"] = status
        loop.quit()
        return False

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        status, headers, body = http("POST", url, token, offer.encode(), "application/sdp")
        out["status"] = status
        if status != 201:
            fail(body.decode(errors="replace")[:300])
            return False
        out["location"] = headers.get("Location")
        answer = body.decode()
        out["setup"] = sorted({line.split(":", 1)[1].strip() for line in answer.splitlines()
                               if line.startswith("a=setup:")})
        on_answer(answer)
        return False

    def on_gathering(element, _pspec) -> None:
        if element.get_property("ice-gathering-state") == \
                GstWebRTC.WebRTCICEGatheringState.COMPLETE and "posted" not in out:
            out["posted"] = True
            GLib.idle_add(post_offer)

    def on_offer(promise, _data) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element) -> None:
        promise = Gst.Promise.new_with_change_func(on_offer, None)
        element.emit("create-offer", None, promise)

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _b, m: fail(str(m.parse_error()[0])))
    pipeline.set_state(Gst.State.PLAYING)
    watchdog = threading.Timer(seconds + 60, lambda: GLib.idle_add(lambda: fail("timeout")))
    watchdog.daemon = True
    watchdog.start()
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    out.pop("posted", None)
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
