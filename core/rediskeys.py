"""The Redis keys of one deployment."""

from __future__ import annotations

import hashlib
from typing import Any


def redis_prefix(config: Any) -> str:
    """Keys of one deployment: processes sharing a database share the prefix (tests,
    which share one Redis with a database each, do not)."""
    given = config.get("YUANJIAO_REDIS_PREFIX")
    if given:
        return given
    digest = hashlib.sha1(str(config["SQLALCHEMY_DATABASE_URI"]).encode()).hexdigest()[:12]
    return f"yuanjiao:{digest}"
