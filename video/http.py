"""RFC 9725 (WHIP) and WHEP plumbing for /whip and /whep: CORS and preflight, OPTIONS,
`Link: rel="ice-server"` headers and the 201 (entity tags and SDP fragments: video/ice.py).

The views in video/views.py stay thin; everything here is header and text handling.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from video.ice import ice_servers

#: What the preflight allows and what a page on another origin may read.
ALLOW_METHODS = "POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSE_HEADERS = "Location, Link, ETag, Accept-Post, Accept-Patch, Retry-After"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
#: Methods of the endpoint (`/whip/<occ>`) and of a session's resource (`/whip/<occ>/<id>`).
ENDPOINT_METHODS = "POST, OPTIONS"
RESOURCE_METHODS = "PATCH, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE = 600


def own_origin() -> str:
    return request.host_url.rstrip("/")


def allowed_origin(origin: str | None) -> bool:
    """The app's own origin, or one listed in `YUANJIAO_CORS_ORIGINS`."""
    if not origin:
        return False
    origin = origin.rstrip("/")
    listed = current_app.config.get("YUANJIAO_CORS_ORIGINS") or []
    if isinstance(listed, str):
        listed = [o.strip() for o in listed.split(",")]
    return origin == own_origin() or origin in {o.rstrip("/") for o in listed if o}


def add_cors(response: Response) -> Response:
    """CORS headers for an allowed `Origin` (an after_request hook of the signaling views).

    No `Access-Control-Allow-Credentials`: other origins authenticate with a bearer key,
    never with this site's cookies.
    """
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if allowed_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


def _quoted(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(*, with_credentials: bool) -> list[str]:
    """`Link` values for `YUANJIAO_ICE_SERVERS` (RFC 9725 section 4.6).

    Servers with credentials (TURN) only when `with_credentials`: an OPTIONS request is not
    authenticated, so it names only the servers that need none.
    """
    links = []
    servers = (ice_servers(current_app.config, "whep") if with_credentials
               else current_app.config.get("YUANJIAO_ICE_SERVERS") or [])
    for entry in servers:
        urls = entry.get("urls") or entry.get("url") or []
        if isinstance(urls, str):
            urls = [urls]
        username, credential = entry.get("username"), entry.get("credential")
        if (username or credential) and not with_credentials:
            continue
        for url in urls:
            link = f'<{url}>; rel="ice-server"'
            if username is not None:
                link += f"; username={_quoted(username)}"
            if credential is not None:
                link += f"; credential={_quoted(credential)}"
                link += '; credential-type="password"'
            links.append(link)
    return links


def options_response(resource: bool) -> Response:
    """OPTIONS on an endpoint or a resource: 204, `Allow`, `Accept-Post`/`Accept-Patch`."""
    response = Response(status=204)
    response.headers.remove("Content-Type")
    if resource:
        response.headers["Allow"] = RESOURCE_METHODS
        response.headers["Accept-Patch"] = SDPFRAG
    else:
        response.headers["Allow"] = ENDPOINT_METHODS
        response.headers["Accept-Post"] = SDP
        for link in ice_server_links(with_credentials=False):
            response.headers.add("Link", link)
    return response


def created_response(location: str, answer: str, etag: str | None) -> Response:
    """The 201 of a POST: the answer, `Location`, the resource's `ETag`, ice-server links."""
    response = Response(answer, status=201, mimetype=SDP)
    response.headers["Location"] = location
    if etag:
        response.headers["ETag"] = etag
    response.headers["Accept-Patch"] = SDPFRAG
    for link in ice_server_links(with_credentials=True):
        response.headers.add("Link", link)
    return response


def if_match_values(header: str | None) -> list[str] | None:
    """The entity tags of an `If-Match` header (None when absent; ["*"] for any)."""
    if header is None or not header.strip():
        return None
    return [part.strip() for part in header.split(",") if part.strip()]
