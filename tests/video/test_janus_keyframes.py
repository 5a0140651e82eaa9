"""Keyframe requests from a Janus edge reach the origin, rate-limited: the edge's viewers
(real aiortc peers answering Janus's offer) flood it with PLIs; Janus passes at most one a
second to the origin's RTCP socket, and the origin's encoder grants at most one a second."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.browser.test_janus import ADMIN_KEY, SECRET, edges  # noqa: F401 (fixture)
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, empty_config
from tests.video.test_signaling import bearer, stream_key, whip_signal
from video import janus, media

pytestmark = pytest.mark.media


class JanusViewer:
    """A site as a Janus edge sees it: answers the edge's offer, decodes what it gets."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(configuration=empty_config())
        self.frames = 0
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def _on_track(track):
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track) -> None:
        try:
            while True:
                await track.recv()
                if track.kind == "video":
                    self.frames += 1
        except MediaStreamError:
            pass

    async def answer(self, edge: janus.JanusEdge, watch: dict) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(watch["offer"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await in_thread(edge.start, watch["session"], watch["handle"],
                        self.pc.localDescription.sdp)

    async def pli(self) -> bool:
        """A keyframe request to the edge for the video it receives."""
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
        sources = receiver.getSynchronizationSources()
        if not sources:
            return False
        await receiver._send_rtcp_pli(sources[0].source)
        return True

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


def test_edge_keyframe_requests_reach_the_origin_rate_limited(
        app, client, factory, scene, db_session, edges):  # noqa: F811
    occ = scene.occurrence.id
    key = stream_key(client, occ, factory.headers(scene.trainer))
    db_session.commit()
    url = next(iter(edges.values()))[0]
    edge = janus.JanusEdge(url, SECRET, ADMIN_KEY)
    engine = media.backend(app)
    seen: dict = {}
    out: dict = {}

    async def scenario():
        publisher = Publisher()
        await publisher.start(whip_signal(client, occ, bearer(key), seen))
        mount = await in_thread(edge.mountpoint, occ)
        out["mount"] = mount
        target = {"edge": edge.name, **mount}
        assert await in_thread(janus.forward, engine, occ, target)
        broadcast = engine.broadcasts[occ]
        forward = broadcast.edge_forwards[edge.name]
        source = broadcast.video_sources[("vp8", "high")]
        viewers = [JanusViewer() for _ in range(3)]
        sessions = []
        for viewer in viewers:
            watch = await in_thread(edge.watch, occ)
            sessions.append(watch["session"])
            await viewer.answer(edge, watch)
        assert await wait_for(lambda: all(v.frames > 10 for v in viewers), 20)
        # Each viewer's WebRTC setup already made Janus ask the origin for a keyframe.
        assert await wait_for(lambda: forward.keyframe_requests >= 1, 5)
        out["on_setup"] = forward.keyframe_requests
        # The flood: 3 viewers x 20 PLIs a second for 3 seconds.
        requests_before, keyframes_before = forward.keyframe_requests, source.keyframes
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 3.0:
            for viewer in viewers:
                sent += await viewer.pli()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        out.update(sent=sent, elapsed=elapsed,
                   requests=forward.keyframe_requests - requests_before,
                   keyframes=source.keyframes - keyframes_before,
                   described=forward.describe())
        for viewer in viewers:
            await viewer.close()
        for session in sessions:
            await in_thread(edge.close, session)
        await in_thread(client.delete, seen["whip"], headers=bearer(key))
        await publisher.close()

    run(scenario())
    media.runtime(app).drain()
    print(f"edge keyframe requests: {out['sent']} PLIs from viewers in {out['elapsed']:.1f} s"
          f" -> {out['requests']} reached the origin -> {out['keyframes']} keyframes")
    assert out["mount"]["video_rtcp_port"]
    assert out["sent"] >= 100
    # They reach the origin...
    assert out["requests"] >= 2
    # ...at most about one a second (Janus's limit), and the encoder grants at most one a
    # second plus its regular keyframe every 2.5 s.
    assert out["requests"] <= out["elapsed"] + 2
    assert out["keyframes"] <= out["elapsed"] / 1.0 + 1
    assert out["described"]["keyframe_requests"] >= out["requests"]
