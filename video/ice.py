"""ICE details shared by the engine and the HTTP layer, free of Flask: the entity tag of a
resource's ICE session, trickle-ICE SDP fragments (RFC 8840), and time-limited TURN
credentials (the "TURN REST API" draft, coturn's `use-auth-secret`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any


def turn_credentials(secret: str, user: str, ttl_seconds: int,
                     now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid until now + ttl: username = "<expiry>:<user>",
    credential = base64(HMAC-SHA1(secret, username)), as coturn checks them with
    `use-auth-secret` and `static-auth-secret=<secret>`."""
    expiry = int((time.time() if now is None else now) + ttl_seconds)
    username = f"{expiry}:{user}" if user else str(expiry)
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: Any, user: str = "", now: float | None = None) -> list[dict[str, Any]]:
    """YUANJIAO_ICE_SERVERS, plus the TURN servers of YUANJIAO_TURN_URLS with credentials
    made now for `user` (a label for coturn's logs) when YUANJIAO_TURN_SECRET is set."""
    servers = [dict(s) for s in config.get("YUANJIAO_ICE_SERVERS") or []]
    urls, secret = config.get("YUANJIAO_TURN_URLS") or [], config.get("YUANJIAO_TURN_SECRET")
    if urls and secret:
        username, credential = turn_credentials(
            secret, user, int(config["YUANJIAO_TURN_TTL_SECONDS"]), now)
        servers.append({"urls": list(urls), "username": username, "credential": credential})
    return servers


def etag_for(resource_id: str, ice_ufrag: str | None) -> str:
    """A strong entity tag of one ICE session of a resource (changes with an ICE restart)."""
    digest = hashlib.sha256(f"{resource_id}:{ice_ufrag or ''}".encode()).hexdigest()[:20]
    return f'"{digest}"'


@dataclass
class SdpFragment:
    """A trickle-ICE SDP fragment (RFC 8840): ICE credentials, candidates per mid."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFragment:
    """Parse `application/trickle-ice-sdpfrag`; ValueError when it is not one."""
    fragment = SdpFragment()
    mid: str | None = None
    seen_any = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise ValueError(f"not an SDP line: {line[:40]}")
        seen_any = True
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=ice-ufrag:"):
            fragment.ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            fragment.pwd = line.split(":", 1)[1]
        elif line.startswith("a=mid:"):
            mid = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            fragment.candidates.append((mid, line[len("a=candidate:"):]))
        elif line == "a=end-of-candidates":
            fragment.end_of_candidates = True
    if not seen_any:
        raise ValueError("empty SDP fragment")
    return fragment
