"""ICE details shared by the engine and the HTTP layer, free of Flask: the entity tag of a
resource's ICE session, and trickle-ICE SDP fragments (RFC 8840)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
