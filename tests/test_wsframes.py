"""core.wsframes: gevent-websocket's frames unmasked by wsaccel, byte for byte as its own
Python loop does, and its UTF-8 check wsaccel's."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("geventwebsocket")


def test_unmasking_in_c_gives_the_same_bytes_as_the_python_loop():
    from geventwebsocket.websocket import Header

    from core.wsframes import speed_up_gevent_websocket

    original = Header.mask_payload
    if getattr(original, "accelerated", False):
        pytest.fail("patched before the test could keep the original")
    rng = random.Random(7)
    cases = []
    for length in (0, 1, 3, 4, 5, 125, 126, 127, 1000, 65536):
        header = Header(fin=True, opcode=1, length=length)
        header.mask = bytes(rng.randrange(256) for _ in range(4))
        payload = bytes(rng.randrange(256) for _ in range(length))
        cases.append((header, payload, original(header, payload)))
    try:
        assert speed_up_gevent_websocket() is True
        assert speed_up_gevent_websocket() is True  # once is enough; again changes nothing
        assert Header.mask_payload is not original
        assert Header.unmask_payload is Header.mask_payload
        for header, payload, expected in cases:
            got = header.unmask_payload(payload)
            assert isinstance(got, bytearray)
            assert got == expected
            assert header.mask_payload(bytes(got)) == bytearray(payload)  # XOR twice: back
    finally:
        Header.mask_payload = Header.unmask_payload = original


def test_gevent_websocket_checks_utf8_with_wsaccel():
    from geventwebsocket.utf8validator import Utf8Validator

    assert Utf8Validator.__module__.startswith("wsaccel")
    assert Utf8Validator().validate("点名签到".encode())[0]
    assert not Utf8Validator().validate(b"\xff\xfe")[0]
