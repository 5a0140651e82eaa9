"""Rate limits with Flask-Limiter: requests counted per key in a moving window, in Redis
when REDIS_URL is set (every worker counts together), else in this process.

A limit is never a reason to refuse legitimate work: while Redis cannot be reached the
counts go on in this process's memory (`in_memory_fallback_enabled`), and any other error
of the limiter is logged and the request served (`swallow_errors`). Keys name who acts,
never only an address: a meeting room's phones and its screen share one address, and a
roll call of 1,000 members, or 1,000 check-ins a second from many rooms, must pass.

- `limit_logins`: login attempts (the form and the token endpoint) per username;
- `limit_imports`: member and .ics imports per user;
- `limit_qr_check_ins`: QR check-ins per member (his user).

A refused request answers 429 with Retry-After and the project's error body (JSON for
the API, the error page for pages). Failed logins are counted apart, with a growing
delay and a lock (accounts.throttle).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from core.errors import TooManyRequests

limiter = Limiter(
    key_func=get_remote_address,
    strategy="moving-window",
    in_memory_fallback_enabled=True,
    swallow_errors=True,
    headers_enabled=False,
)


def init_app(app: Flask) -> None:
    # Redis when REDIS_URL is set (a test may name the limits' storage alone).
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    # Redis answers within this or counts go on in memory (a dead Redis must not stall
    # every login for a TCP timeout).
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 1,
                                                        "socket_timeout": 1})
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "yuanjiao")
    # One Limiter serves the process; a new app (tests) brings its own storage and prefix.
    limiter._storage_dead = False
    limiter._key_prefix = ""
    limiter.init_app(app)


def as_domain_error(error: RateLimitExceeded) -> TooManyRequests:
    """The refusal in the project's terms: the edge answers it as any domain error (429,
    Retry-After, the JSON body or the error page)."""
    wait = 1
    current = limiter.current_limit
    if current is not None:
        wait = max(1, math.ceil(current.window[0] - time.time()))  # when one frees
    return TooManyRequests(error.description or "请求过于频繁，请稍后再试",
                           code="too_many_requests",
                           details={"retry_after": wait, "limit": str(error.limit.limit)})


def _per_minute(setting: str) -> Callable[[], str]:
    return lambda: f"{int(current_app.config[setting])}/minute"


def caller_key() -> str:
    """The calling user (session or bearer token); his address when there is none."""
    from core.api import current_principal

    try:
        principal = current_principal()
    except Exception:
        return f"addr:{get_remote_address()}"
    if principal.id is None:  # a site screen
        return f"site:{principal.site_id}"
    return f"user:{principal.id}"


def login_key() -> str:
    """The username a login names (the form's or the JSON body's), normalised."""
    data: Any = request.form if request.form else (request.get_json(silent=True) or {})
    username = data.get("username") if isinstance(data, dict) or hasattr(data, "get") else None
    if not isinstance(username, str) or not username.strip():
        return f"addr:{get_remote_address()}"
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"username:{digest}"


#: Decorators of views (under the route and login decorators: the key names the caller).
#: Each is one count across the routes it decorates (the login form and the token
#: endpoint; the three imports).
limit_logins = limiter.shared_limit(_per_minute("YUANJIAO_LOGINS_PER_MINUTE"), "login",
                                    key_func=login_key, methods=["POST"],
                                    error_message="登录过于频繁，请稍后再试")
limit_imports = limiter.shared_limit(_per_minute("YUANJIAO_IMPORTS_PER_MINUTE"), "import",
                                     key_func=caller_key, methods=["POST"],
                                     error_message="导入过于频繁，请稍后再试")
limit_qr_check_ins = limiter.shared_limit(_per_minute("YUANJIAO_QR_CHECKINS_PER_MINUTE"), "qr",
                                          key_func=caller_key, methods=["POST"],
                                          error_message="签到过于频繁，请稍后再试")
