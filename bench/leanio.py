"""A lean Socket.IO client for load generation: Engine.IO v4 frames over aiohttp websockets.

python-socketio's AsyncClient costs a few milliseconds of CPU per connection opened and
keeps several tasks per connection; on this 2-core machine its client processes opened
about 13 connections a second while sharing the cores with the server they measure, so
10,000 connections were never reached. This client speaks the few frames a benchmark
needs and nothing else, one reader task per connection:

* ``0{...}`` the server's open packet; ``2`` a server ping, answered with ``3``;
* ``40/ns,{auth}`` connect to a namespace, answered ``40/ns,{"sid"}`` or ``44/ns,{error}``;
* ``42/ns,<id>["event",data]`` an event with an ack id, acked by ``43/ns,<id>[data]``;
  events the server pushes (``42/ns,["attendance:update",...]``) are counted and dropped.

It is not a general client: no polling, no reconnection, no binary attachments.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp


class LeanError(Exception):
    """The server refused the namespace, or the connection closed."""


class LeanClient:
    """One websocket connection with one namespace; the API bench/attendance.py uses of
    python-socketio's AsyncClient (`call`, `emit` with a callback, `disconnect`)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.namespace = "/"
        self.next_id = 0
        self.acks: dict[int, Callable[..., Any]] = {}
        self.pushed = 0
        self.reader: asyncio.Task | None = None
        self.connected = asyncio.get_running_loop().create_future()

    async def connect(self, url: str, namespace: str, auth: dict | None = None,
                      timeout: float = 60) -> None:
        ws_url = url.replace("http", "ws", 1).rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        self.namespace = namespace
        self.ws = await self.session.ws_connect(ws_url, autoping=True, heartbeat=None,
                                                compress=0, timeout=aiohttp.ClientWSTimeout(
                                                    ws_receive=None, ws_close=5))
        self.reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self.connected, timeout)
        await self.ws.send_str(f"40{namespace},{json.dumps(auth or {})}")
        self.connected = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.connected, timeout)

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        prefix = f"{self.namespace},"
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data: str = msg.data
                kind = data[:1]
                if kind == "2":
                    await ws.send_str("3")
                elif kind == "0":
                    self.connected.set_result(True)
                elif kind == "4":
                    self._packet(data[1:], prefix)
        except (aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not self.connected.done():
                self.connected.set_exception(LeanError("closed"))

    def _packet(self, data: str, prefix: str) -> None:
        kind, rest = data[:1], data[1:]
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
        if kind == "2":  # a pushed event
            self.pushed += 1
        elif kind == "3":  # an ack: <id>[args]
            cut = rest.index("[")
            cb = self.acks.pop(int(rest[:cut]), None)
            if cb is not None:
                args = json.loads(rest[cut:])
                cb(*args)
        elif kind == "0":
            if not self.connected.done():
                self.connected.set_result(True)
        elif kind == "4" and not self.connected.done():
            self.connected.set_exception(LeanError(rest))

    async def emit(self, event: str, data: Any = None, namespace: str | None = None,
                   callback: Callable[..., Any] | None = None) -> None:
        if self.ws is None or self.ws.closed:
            raise LeanError("closed")
        body = json.dumps([event, data], separators=(",", ":"), ensure_ascii=False)
        if callback is None:
            await self.ws.send_str(f"42{self.namespace},{body}")
            return
        self.next_id += 1
        self.acks[self.next_id] = callback
        await self.ws.send_str(f"42{self.namespace},{self.next_id}{body}")

    async def call(self, event: str, data: Any = None, namespace: str | None = None,
                   timeout: float = 60) -> Any:
        done = asyncio.get_running_loop().create_future()

        def cb(*args: Any) -> None:
            if not done.done():
                done.set_result(args[0] if args else None)

        await self.emit(event, data, callback=cb)
        return await asyncio.wait_for(done, timeout)

    async def disconnect(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(f"41{self.namespace},")
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


def session() -> aiohttp.ClientSession:
    """One HTTP session per client process, with no cap on its connections."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))


async def connect(http: aiohttp.ClientSession, url: str, namespace: str, token: str,
                  timeout: float = 60) -> LeanClient:
    client = LeanClient(http)
    try:
        await client.connect(url, namespace, {"token": token}, timeout)
    except BaseException:
        await client.disconnect()
        raise
    return client
