"""The media engine with real aiortc peers in this process: no HTTP, no database."""

from __future__ import annotations

import asyncio
import time

import av
import pytest

from tests.video.conftest import engine_signals as signals
from tests.video.conftest import in_thread, run, wait_for
from tests.video.peers import Publisher, Subscriber
from video.engine import MediaEngine, MediaError, parse_offer
from video.relay import VIDEO_TIME_BASE, EncodedPacket, PacketSource, SubscriberTrack

pytestmark = pytest.mark.media


@pytest.fixture
def engine():
    events: list[dict] = []
    eng = MediaEngine(on_event=events.append).start()
    eng.events = events
    yield eng
    eng.shutdown()


def test_frames_late_keyframe_stop_and_recording(engine, tmp_path):
    """Frames arrive; a late site decodes within 1 s; stop ends every site; WebM decodes."""
    record = tmp_path / "rec" / "lecture.webm"
    publish, subscribe = signals(engine, 5, {"record_path": str(record), "bitrate_kbps": 600,
                                             "height": 240})

    async def scenario():
        publisher = Publisher()
        resource = await publisher.start(publish)
        first = Subscriber()
        await first.start(subscribe)
        assert await first.wait_frames(30, timeout=10), first.frames
        assert first.sizes == {(320, 240)}  # scaled to the occurrence's height, once
        await asyncio.sleep(1.7)  # away from the regular keyframe
        late = Subscriber()
        await late.start(subscribe)
        assert await late.wait_frames(1, timeout=3)
        assert late.first_frame_seconds < 1.0, late.first_frame_seconds
        stats = await in_thread(engine.stats, 5)
        assert stats["state"] == "live"
        assert stats["subscribers"] == 2
        assert stats["codecs"] == ["vp8"]
        before = first.frames
        await asyncio.sleep(1)
        assert first.frames - before >= 20  # ~30 fps keeps flowing to the first site
        assert await in_thread(engine.stop, resource)
        await asyncio.wait_for(first.ended.wait(), 5)
        await asyncio.wait_for(late.ended.wait(), 5)
        assert await wait_for(lambda: first.pc.connectionState == "closed"
                              and late.pc.connectionState == "closed", 5)
        assert (await in_thread(engine.stats, 5))["state"] == "ended"
        for peer in (publisher, first, late):
            await peer.close()

    run(scenario())
    types = [e["type"] for e in engine.events]
    assert types[0] == "broadcast_started"
    assert types.count("subscriber_joined") == 2
    ended = next(e for e in engine.events if e["type"] == "broadcast_ended")
    assert ended["recording"]["status"] == "complete"
    assert ended["recording"]["size_bytes"] == record.stat().st_size > 0
    with av.open(str(record)) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]
        frames = list(container.decode(video=0))
    assert len(frames) > 60
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_one_sites_keyframe_requests_do_not_flood_the_others(engine):
    """A site sending PLIs 20 times a second gets at most ~1 keyframe a second for all."""
    publish, subscribe = signals(engine, 6)

    async def scenario():
        publisher = Publisher(audio=False, width=320, height=240)
        await publisher.start(publish)
        noisy, quiet = Subscriber(audio=False), Subscriber(audio=False)
        await noisy.start(subscribe)
        await quiet.start(subscribe)
        assert await quiet.wait_frames(10, timeout=10)
        assert await noisy.wait_frames(10, timeout=10)
        start_keys = (await in_thread(engine.stats, 6))["keyframes"]
        receiver = noisy.pc.getReceivers()[0]
        ssrc = receiver._RTCRtpReceiver__remote_streams and next(
            iter(receiver._RTCRtpReceiver__remote_streams))
        before = quiet.frames
        await asyncio.sleep(2)
        baseline = (quiet.frames - before) / 2
        quiet_before = quiet.frames
        started = time.monotonic()
        while time.monotonic() - started < 4:
            await receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.05)
        keys = (await in_thread(engine.stats, 6))["keyframes"] - start_keys
        # 4 s: at most one granted request a second plus the regular 2.5 s keyframe.
        assert 2 <= keys <= 7, keys
        rate = (quiet.frames - quiet_before) / (time.monotonic() - started)
        assert rate >= 0.7 * baseline, (rate, baseline)  # the quiet site is undisturbed
        for peer in (publisher, noisy, quiet):
            await peer.close()

    run(scenario())


def test_subscriber_queue_drops_oldest_and_waits_for_a_keyframe():
    """A site that stops reading is cut back to the next keyframe; others are untouched."""
    requests = []

    async def scenario():
        source = PacketSource("video", lambda: requests.append(1))
        slow = SubscriberTrack("video", source)
        fast = SubscriberTrack("video", source)
        source.attach(slow)
        source.attach(fast)
        got = []
        for i in range(200):
            source.publish(EncodedPacket(b"x" * 10, i * 3000, VIDEO_TIME_BASE, i % 50 == 0))
            got.append(await fast.recv())
        assert [p.pts for p in got] == [i * 3000 for i in range(200)]
        assert slow.packets_dropped > 0
        assert len(slow._queue) <= 60
        pts = [(await slow.recv()).pts for _ in range(len(slow._queue))]
        assert pts == sorted(pts)
        assert all(p // 3000 >= 150 for p in pts)  # resumed at the keyframe of packet 150
        slow.stop()
        assert slow not in source.tracks

    run(scenario())
    assert len(requests) >= 3  # two attaches and at least one lagging site


def test_not_live_and_bad_sdp(engine):
    with pytest.raises(MediaError) as bad:
        parse_offer("hello")
    assert bad.value.code == "bad_sdp"

    async def scenario():
        sub = Subscriber()
        await sub.pc.setLocalDescription(await sub.pc.createOffer())
        with pytest.raises(MediaError) as not_live:
            await in_thread(engine.subscribe, 9, sub.pc.localDescription.sdp, {})
        assert not_live.value.code == "not_live"
        await sub.close()

    run(scenario())
