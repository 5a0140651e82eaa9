"""An edge joining a lecture whose layer holds a cached group of pictures (a site joined
earlier, or forward mode's GOP cache): the edge's RTP output gets the whole group at once.
It has no queue of its own; attaching it used to raise (a 500 on /play, so the page
watched from the origin under YUANJIAO_ORIGIN_MAX_SITES=0)."""

from __future__ import annotations

import fractions
import socket

from video.janus import _RtpOut
from video.relay import EncodedPacket, PacketSource


def test_an_edge_output_attaches_to_a_source_with_a_cached_gop():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        source = PacketSource("video")
        base = fractions.Fraction(1, 90_000)
        source.publish(EncodedPacket(b"\x10" * 300, 0, base, True))
        for i in range(1, 4):
            source.publish(EncodedPacket(b"\x11" * 200, 3000 * i, base, False))
        out = _RtpOut("video", sender, receiver.getsockname())
        source.attach(out)
        assert out in source.tracks
        assert out.sent >= 4  # the keyframe and the three frames after it, at once
        assert receiver.recv(2000)
    finally:
        sender.close()
        receiver.close()
