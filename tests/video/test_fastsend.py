"""The sites' fast send path (video.fastsend) against aiortc's own sender, with real peers."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from tests.video.conftest import engine_signals as signals
from tests.video.conftest import in_thread
from tests.video.peers import Impairment, Publisher, Subscriber
from video.engine import MediaEngine
from video.fastsend import (
    _HEADER,
    _SEGMENT,
    SOL_UDP,
    UDP_SEGMENT,
    EvenVp8Packetizer,
    FastSender,
    gso_available,
)
from video.relay import VIDEO_TIME_BASE, EncodedPacket


@pytest.fixture
def engine():
    eng = MediaEngine().start()
    yield eng
    eng.shutdown()


@pytest.mark.parametrize(("mid", "ids"), [("0", {"mid": 1, "abs": 2}), ("1", {"mid": 9}),
                                          ("video", {"abs": 3}), (None, {})])
def test_header_is_aiortcs(mid, ids):
    """A packet made from the per-site template is byte for byte what aiortc serializes."""
    extensions = []
    if "mid" in ids:
        extensions.append(RTCRtpHeaderExtensionParameters(
            id=ids["mid"], uri="urn:ietf:params:rtp-hdrext:sdes:mid"))
    if "abs" in ids:
        extensions.append(RTCRtpHeaderExtensionParameters(
            id=ids["abs"], uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"))
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(RTCRtpParameters(headerExtensions=extensions))
    packet = RtpPacket(payload_type=96, sequence_number=65535, timestamp=4294967295,
                       ssrc=0x12345678, marker=1, payload=b"\x90\x80payload")
    packet.extensions.abs_send_time = 0xABCDEF
    packet.extensions.mid = mid

    fast = FastSender.__new__(FastSender)
    fast._ext_template = FastSender._extension_template(extensions_map, mid)
    fast._ext_cache = (b"", b"")
    ext = fast._extensions(b"\xab\xcd\xef")
    ours = _HEADER.pack(0x90 if ext else 0x80, 0x80 | 96, 65535, 4294967295,
                        0x12345678) + ext + b"\x90\x80payload"
    assert ours == packet.serialize(extensions_map)


@pytest.mark.parametrize("size", [1, 700, 1296, 1297, 5000, 5183, 40000])
def test_vp8_packets_of_one_size(size):
    """A frame's VP8 packets all have one size (the shorter parts carry a byte of RTP
    padding), and aiortc's depacketizer gives the frame back; picture ids run on."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packetize = EvenVp8Packetizer()
    first_id = packetize.picture_id
    payloads, timestamp, pads = packetize(EncodedPacket(data, 3000, VIDEO_TIME_BASE, True))
    assert timestamp == 3000
    assert len({len(p) for p in payloads}) == 1
    assert max(len(p) for p in payloads) <= 1300
    pads = pads or [0] * len(payloads)
    frame = b""
    for i, (payload, pad) in enumerate(zip(payloads, pads, strict=True)):
        body = payload[:-1] if pad else payload
        descriptor, part = VpxPayloadDescriptor.parse(body)
        assert descriptor.partition_start == (i == 0)
        assert descriptor.picture_id == first_id
        frame += part
    assert frame == data
    assert packetize.picture_id == (first_id + 1) % 32768


def test_gso_splits_into_datagrams():
    """One sendmsg with UDP_SEGMENT arrives as datagrams of the segment size (the last
    shorter); this machine's kernel takes it (else the path sends one by one)."""
    if not gso_available():
        pytest.skip("no UDP GSO on this kernel: the fast path sends one datagram per call")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(1)
        parts = [bytes([i]) * 1200 for i in range(5)] + [b"z" * 300]
        tx.sendmsg(parts, [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(1200))], 0,
                   rx.getsockname())
        assert [rx.recv(2000) for _ in parts] == parts


@pytest.mark.media
@pytest.mark.parametrize("fast_send", [True, False])
def test_sites_decode_on_either_path(engine, fast_send):
    """Sites decode video and audio on the fast path (batched sends) and with
    `fast_send: false` on aiortc's own sender loop."""
    publish, subscribe = signals(engine, 41, {"bitrate_kbps": 600, "height": 240,
                                              "fast_send": fast_send})

    async def scenario():
        publisher = Publisher()
        await publisher.start(publish)
        sites = [Subscriber(), Subscriber(audio=False)]
        for site in sites:
            await site.start(subscribe)
        for site in sites:
            assert await site.wait_frames(45, timeout=12), site.frames
        assert sites[0].audio_frames > 10
        await asyncio.sleep(2.5)  # sender and receiver reports have crossed
        stats = await in_thread(engine.stats, 41)
        for site in sites:
            await site.close()
        await publisher.close()
        return stats

    stats = asyncio.run(scenario())
    path = stats["send_path"]
    assert path["fast"] is fast_send
    if fast_send:
        assert path["datagrams"] > 100
        assert path["datagrams_fallback"] == 0
        assert path["reports"] > 0  # one compound sender report per site and second
        assert path["audio_with_video"] > 10  # audio rode with the first site's frames
        if path["gso"]:
            assert path["datagrams_batched"] > 0
            assert path["send_batches"] < path["datagrams"]
    # Either way the receiver reports answer the sender reports: round trips are known.
    assert all(site["rtt_ms"] is not None for site in stats["sites"]), stats["sites"]


@pytest.mark.media
def test_lost_packets_are_resent_on_the_fast_path(engine):
    """NACKed packets go again from the fast path's history (RTX: aiortc negotiates it),
    and the site keeps decoding through 5 % loss."""
    publish, subscribe = signals(engine, 42, {"bitrate_kbps": 600, "height": 240,
                                              "fast_send": True})

    async def scenario():
        publisher = Publisher()
        await publisher.start(publish)
        site = Subscriber(impairment=Impairment(loss=0.05, delay_ms=40))
        await site.start(subscribe)
        assert await site.wait_frames(150, timeout=20), site.frames
        stats = await in_thread(engine.stats, 42)
        await site.close()
        await publisher.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats["send_path"]["fast"] is True
    (site,) = stats["sites"]
    assert site["retransmits"] > 0, site


@pytest.mark.media
def test_a_site_off_the_plain_udp_path_gets_its_packets_through_aiortc(engine):
    """A site whose selected pair is not a plain UDP socket of ours (TURN, TCP: here the
    site's output is told so) gets the same packets through aiortc's DTLS transport."""
    publish, subscribe = signals(engine, 43, {"bitrate_kbps": 600, "height": 240,
                                              "fast_send": True})

    async def scenario():
        publisher = Publisher()
        await publisher.start(publish)
        site = Subscriber()
        resource = await site.start(subscribe)
        subscriber = engine.broadcasts[43].subscribers[resource]
        for fast in subscriber.fast_senders:
            fast.output._socket = lambda: None  # as for a TURN or TCP pair
        before = site.frames
        assert await site.wait_frames(before + 60, timeout=12), site.frames
        audio = site.audio_frames
        await asyncio.sleep(1)
        assert site.audio_frames > audio
        stats = await in_thread(engine.stats, 43)
        await site.close()
        await publisher.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats["send_path"]["datagrams_fallback"] > 100



@pytest.mark.media
def test_a_nacked_packet_is_counted_behind_what_has_left_not_what_waits_for_pacing(engine):
    """How far behind a NACKed packet lies (which decides whether its repair is held back)
    is counted from the newest packet that has left. With a site's packets waiting for
    their pacing slots (a narrow link), the history's newest was the newest packetized,
    seconds ahead: every hole looked far behind and its repairs were held back (the
    800 kb/s profile froze 3.7-4.5 s)."""
    publish, subscribe = signals(engine, 44, {"bitrate_kbps": 600, "height": 240,
                                              "fast_send": True})

    async def scenario():
        publisher = Publisher()
        await publisher.start(publish)
        site = Subscriber()
        resource = await site.start(subscribe)
        assert await site.wait_frames(30, timeout=12), site.frames
        subscriber = engine.broadcasts[44].subscribers[resource]
        (video,) = [f for f in subscriber.fast_senders if f.video]
        video.pacer._rate_kbps = lambda: 64.0  # a narrow link: frames wait for their slots
        video.pacer._estimate_kbps = None

        def sample():
            if video._pending:
                return video.history.newest, (video._pending[0] - 1) & 0xFFFF
            return None

        samples = []
        for _ in range(60):
            await asyncio.sleep(0.05)
            got = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                _call(sample), engine._loop))
            if got is not None:
                samples.append(got)
        await site.close()
        await publisher.close()
        return samples

    samples = asyncio.run(scenario())
    assert len(samples) >= 10, samples  # packets did wait for pacing
    assert all(newest == last_sent for newest, last_sent in samples), samples


async def _call(fn):
    return fn()


@pytest.mark.media
@pytest.mark.parametrize("setting", [None, False, True])
def test_the_fast_path_follows_the_setting_unless_the_broadcast_says(setting):
    """The fast path is on by default; `YUANJIAO_FAST_SEND` (the engine's `fast_send`)
    decides for a broadcast that names no `fast_send` of its own; one that does wins."""
    eng = (MediaEngine() if setting is None else MediaEngine(fast_send=setting)).start()
    on = setting is not False
    try:
        async def scenario():
            paths = []
            for occurrence, options in ((45, {}), (46, {"fast_send": not on})):
                publish, _subscribe = signals(eng, occurrence, options)
                publisher = Publisher()
                await publisher.start(publish)
                paths.append((await in_thread(eng.stats, occurrence))["send_path"]["fast"])
                await publisher.close()
            return paths

        assert asyncio.run(scenario()) == [on, not on]
    finally:
        eng.shutdown()
