"""gevent-websocket's per-byte Python loops, done in C by wsaccel.

Every frame a browser sends is masked (RFC 6455), and gevent-websocket unmasks it with a
Python loop over its bytes (`Header.mask_payload`) and checks a text frame's UTF-8 with a
pure-Python state machine unless wsaccel is installed. At 10,000 connections (check-ins,
heartbeats, pings) the two were 3 % of a web process's CPU (py-spy in bench/stack.py).
wsaccel, made for exactly this, brings a C UTF-8 validator (gevent-websocket picks it up by
itself when installed) and a C XOR masker, which `speed_up_gevent_websocket` puts in place
of the loop. Same bytes out (tests/test_wsframes.py).
"""

from __future__ import annotations

from typing import Any


def speed_up_gevent_websocket() -> bool:
    """Unmask frames with wsaccel's masker; False when gevent-websocket or wsaccel is not
    installed (nothing changed)."""
    try:
        from geventwebsocket.websocket import Header
        from wsaccel.xormask import XorMaskerSimple
    except ImportError:
        return False
    if getattr(Header.mask_payload, "accelerated", False):
        return True

    def mask_payload(self: Any, payload: bytes | bytearray) -> bytearray:
        return bytearray(XorMaskerSimple(bytes(self.mask)).process(bytes(payload)))

    mask_payload.accelerated = True  # type: ignore[attr-defined]
    Header.mask_payload = Header.unmask_payload = mask_payload
    return True
