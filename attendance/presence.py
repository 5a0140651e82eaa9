"""How many open connections hold a site's room, counted across web processes.

A site is online while at least one of its screens or operators is connected, whichever
web process holds the connection. With one process the count lives in this process
(`LocalSiteCounts`); with REDIS_URL set it lives in Redis (`RedisSiteCounts`), so a screen
on process A and an operator on process B keep the site online until both have left.

In Redis each process counts in its own field of the site's hash
(``<prefix>:site:<occurrence>:<site>`` -> {process token: count}) and keeps a key
``<prefix>:proc:<token>`` alive while it runs. The remaining count is the sum over
processes still alive, so a process that was killed does not keep its sites online for
ever. Both steps are Lua scripts: atomic, one round trip. The processes alive are also
members of the sorted set ``<prefix>:procs`` (scored by their last renewal), which counts
them in one round trip (the attendance writer spreads its batches by that number).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from core.rediskeys import redis_prefix

log = logging.getLogger(__name__)

Key = tuple[int, int]

#: A process's liveness key expires this long after its last renewal.
PROCESS_TTL_SECONDS = 30
RENEW_SECONDS = 10
#: The app's counts (`site_counts`) are made once.
_made = threading.Lock()


class LocalSiteCounts:
    """(occurrence_id, site_id) -> open connections, in this process."""

    shared = False
    #: Web processes sharing the load (this one alone).
    processes = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = defaultdict(int)

    def add(self, key: Key) -> int:
        with self._lock:
            self._counts[key] += 1
            return self._counts[key]

    def remove(self, key: Key) -> int:
        """One connection left; how many remain (0: the site is offline)."""
        with self._lock:
            self._counts[key] -= 1
            left = self._counts[key]
            if left <= 0:
                self._counts.pop(key, None)
            return max(0, left)

    def count(self, key: Key) -> int:
        with self._lock:
            return self._counts.get(key, 0)


# KEYS[1] site hash; ARGV[1] this process's token, ARGV[2] delta, ARGV[3] key prefix.
# Adds delta to this process's field, then sums the fields of processes still alive
# (dropping the others). Returns the sum.
_CHANGE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local token, value = fields[i], tonumber(fields[i + 1])
  if token == ARGV[1] or redis.call('EXISTS', ARGV[3] .. ':proc:' .. token) == 1 then
    if value > 0 then total = total + value end
  else
    redis.call('HDEL', KEYS[1], token)
  end
end
return total
"""


class RedisSiteCounts:
    """The same counts, shared by every web process through Redis.

    This process's own counts are kept beside them. While Redis is away the answers come
    from those (the process goes on alone: a site is online while this process holds one
    of its connections), and when Redis answers again this process's fields are set back
    from them.
    """

    shared = True

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self.token = uuid.uuid4().hex
        self.local = LocalSiteCounts()
        self.degraded = False
        #: Web processes alive (their keys), counted at each renewal: the writer spreads
        #: its batches by it (attendance/writer.py). 1 until Redis answers.
        self.processes = 1
        self._change = self.redis.register_script(_CHANGE)
        self._alive = threading.Event()
        with contextlib.suppress(Exception):
            self._renew()
        self._thread = threading.Thread(target=self._keep_alive, daemon=True,
                                        name="site-counts-alive")
        self._thread.start()

    def _site_key(self, key: Key) -> str:
        return f"{self.prefix}:site:{key[0]}:{key[1]}"

    def _renew(self) -> None:
        now = time.time()
        procs = f"{self.prefix}:procs"
        pipe = self.redis.pipeline()
        pipe.set(f"{self.prefix}:proc:{self.token}", "1", ex=PROCESS_TTL_SECONDS)
        pipe.zadd(procs, {self.token: now})
        pipe.zremrangebyscore(procs, "-inf", now - PROCESS_TTL_SECONDS)
        pipe.zcard(procs)
        pipe.expire(procs, PROCESS_TTL_SECONDS)
        alive = pipe.execute()[3]
        self.processes = max(1, int(alive))

    def _keep_alive(self) -> None:
        while not self._alive.wait(RENEW_SECONDS):
            try:
                self._renew()
            except Exception:  # Redis away for a moment: try again at the next turn
                log.warning("could not renew this process's presence key in Redis")

    def _shared(self, key: Key, delta: int, local: int) -> int:
        """The count across processes; this process's own when Redis does not answer."""
        try:
            if self.degraded:
                self._resync()  # this change is in the local counts already
                delta = 0
            return int(self._change(keys=[self._site_key(key)],
                                    args=[self.token, delta, self.prefix]))
        except Exception:
            if not self.degraded:
                log.warning("Redis unreachable: site presence counted in this process only")
            self.degraded = True
            return local

    def _resync(self) -> None:
        """Redis is back: this process's fields become its own counts again."""
        self._renew()
        with self.local._lock:
            mine = dict(self.local._counts)
        pipe = self.redis.pipeline()
        for key in self.redis.scan_iter(f"{self.prefix}:site:*"):
            pipe.hdel(key, self.token)
        for key, n in mine.items():
            if n > 0:
                pipe.hset(self._site_key(key), self.token, n)
        pipe.execute()
        self.degraded = False
        log.info("Redis reachable again: site presence shared across processes")

    def add(self, key: Key) -> int:
        return self._shared(key, 1, self.local.add(key))

    def remove(self, key: Key) -> int:
        return self._shared(key, -1, self.local.remove(key))

    def count(self, key: Key) -> int:
        return self._shared(key, 0, self.local.count(key))

    def close(self) -> None:
        """Stop renewing and forget this process (its connections are gone)."""
        self._alive.set()
        with contextlib.suppress(Exception):
            pipe = self.redis.pipeline()
            pipe.delete(f"{self.prefix}:proc:{self.token}")
            pipe.zrem(f"{self.prefix}:procs", self.token)
            pipe.execute()


def site_counts_for(config: Any) -> LocalSiteCounts | RedisSiteCounts:
    """Redis when REDIS_URL is set, else this process."""
    url = config.get("REDIS_URL")
    if not url:
        return LocalSiteCounts()
    return RedisSiteCounts(url, redis_prefix(config))


def site_counts(app: Any) -> LocalSiteCounts | RedisSiteCounts:
    """This app's (occurrence_id, site_id) -> open connections in that site's room, made
    on first use: across every web process through Redis when REDIS_URL is set, else in
    this process (per app: ids repeat across apps, e.g. in tests). A serving process makes
    it at start (`app.start_jobs`), so it counts among the processes alive before its
    first screen joins."""
    counts = app.extensions.get("attendance_site_count")
    if counts is None:
        with _made:
            counts = app.extensions.get("attendance_site_count")
            if counts is None:
                counts = site_counts_for(app.config)
                app.extensions["attendance_site_count"] = counts
    return counts


# --- media sessions of members watching alone ------------------------------------------------

#: A member's media sessions are forgotten this long after the last change (a lecture day).
SESSION_KEY_TTL_SECONDS = 12 * 3600


class RedisMediaSessions:
    """(occurrence_id, member_id) -> the media resources he holds, shared by every web
    process: a member's viewer socket may be on another process than the one that polled
    the media node when his WebRTC session connected, or on one started since.

    Every process that polls the nodes writes the same join and leave (a set: the same
    resource added twice is one). This process's own view is kept beside it and answers
    while Redis is away."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._lock = threading.Lock()
        self._local: dict[tuple[int, int], set[str]] = defaultdict(set)
        self._local_hls: dict[tuple[int, int], float] = {}

    def _hls_key(self, occurrence_id: int, member_id: int) -> str:
        return f"{self.prefix}:watching-hls:{int(occurrence_id)}:{int(member_id)}"

    def fetched(self, occurrence_id: int, member_id: int, lasts: float) -> None:
        """An HLS segment fetched: a key that lapses `lasts` seconds later. Written to
        Redis when a third of it has passed (a viewer fetches a segment a second)."""
        key, now = (occurrence_id, member_id), time.monotonic()
        with self._lock:
            previous = self._local_hls.get(key, 0.0)
            self._local_hls[key] = now + lasts
        if previous - now > lasts * 2 / 3:
            return
        with contextlib.suppress(Exception):
            self.redis.set(self._hls_key(occurrence_id, member_id), "1",
                           px=max(1, int(lasts * 1000)))

    def _key(self, occurrence_id: int, member_id: int) -> str:
        return f"{self.prefix}:watching:{int(occurrence_id)}:{int(member_id)}"

    def joined(self, occurrence_id: int, member_id: int, resource_id: str) -> None:
        with self._lock:
            self._local[(occurrence_id, member_id)].add(resource_id)
        try:
            key = self._key(occurrence_id, member_id)
            pipe = self.redis.pipeline()
            pipe.sadd(key, resource_id)
            pipe.expire(key, SESSION_KEY_TTL_SECONDS)
            pipe.execute()
        except Exception:
            log.warning("Redis unreachable: media session known to this process only")

    def left(self, occurrence_id: int, member_id: int, resource_id: str) -> None:
        with self._lock:
            held = self._local.get((occurrence_id, member_id))
            if held is not None:
                held.discard(resource_id)
                if not held:
                    self._local.pop((occurrence_id, member_id), None)
        with contextlib.suppress(Exception):
            self.redis.srem(self._key(occurrence_id, member_id), resource_id)

    def holds(self, occurrence_id: int, member_id: int) -> bool:
        try:
            pipe = self.redis.pipeline()
            pipe.scard(self._key(occurrence_id, member_id))
            pipe.exists(self._hls_key(occurrence_id, member_id))
            sessions, hls = pipe.execute()
            return bool(sessions or hls)
        except Exception:
            with self._lock:
                until = self._local_hls.get((occurrence_id, member_id), 0.0)
                return bool(self._local.get((occurrence_id, member_id))) \
                    or until > time.monotonic()


def media_sessions_for(config: Any) -> RedisMediaSessions | None:
    """Shared media sessions when REDIS_URL is set; None: the registry keeps its own."""
    url = config.get("REDIS_URL")
    return RedisMediaSessions(url, redis_prefix(config)) if url else None
