"""One writer at a time on SQLite, inside this process.

SQLite has one write lock per database. Threads that contend for it wait in SQLite's busy
handler, which sleeps in growing steps (up to 100 ms), so under a burst most of the time
is spent asleep and latency explodes. Taking a process lock around the short write
(append + commit) turns that contention into a plain queue. PostgreSQL has row locks and
concurrent commits, so it needs none of this.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from extensions import db

_write_lock = threading.Lock()


@contextlib.contextmanager
def serialized_write() -> Iterator[None]:
    """Hold the process's SQLite write turn for an append-and-commit."""
    if db.engine.dialect.name != "sqlite":
        yield
        return
    with _write_lock:
        yield
