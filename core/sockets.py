"""Socket.IO plumbing shared by every namespace: who is calling, and refusals as acks."""

from __future__ import annotations

import logging
from typing import Any, cast

from flask import Flask, g, has_request_context, request
from flask_login import current_user

from core.errors import DomainError, Unauthorized, ValidationError, socket_ack
from core.principals import principal_for_token
from extensions import db, socketio

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Register the one default error handler: a refused event is acked, never dropped."""

    socketio.on_error_default(refusal)


def refusal(error: Exception) -> dict[str, Any]:
    """The ack of a handler that raised: a DomainError's code, else `internal_error`."""
    from sqlalchemy.exc import DataError

    db.session.rollback()
    if isinstance(error, OverflowError | DataError):  # the caller's numbers: 422-like
        error = ValidationError("数值或日期超出允许范围", code="out_of_range")
    if not isinstance(error, DomainError):
        log.exception("socket handler failed", exc_info=error)
        if not has_request_context():  # no request: no locale to translate to
            return {"ok": False, "error": "internal_error", "message": "服务器内部错误"}
    return socket_ack(error)


def on_hot(app: Flask, event: str, handler, namespace: str) -> None:
    """Register a frequent event's handler (heartbeats, roll-call marks, pings) on the
    app's Socket.IO server, run in an app context only.

    Flask-SocketIO runs every event in a request context built from the connection's
    environ (URL matching, the session cookie opened and saved): about a third of a
    heartbeat's CPU. A hot handler reads no request, no session and no `current_user`:
    its connection's caller is what `connect` kept. `socket_sid()` is the event's sid, a
    raised error is acked as `on_error_default` would, and the app context's end removes
    the database session and records the tokens used (accounts' teardown).
    """

    def run(sid: str, *args: Any):
        with app.app_context():
            g.socket_sid = sid
            try:
                return handler(*args)
            except Exception as error:
                return refusal(error)

    socketio.server.on(event, run, namespace=namespace)


#: The largest id a payload may name (PostgreSQL's INTEGER).
MAX_ID = 2**31 - 1


def payload_object(data: Any) -> dict[str, Any]:
    """A socket event's payload must be a JSON object; anything else is refused."""
    if not isinstance(data, dict):
        raise ValidationError("事件数据必须是 JSON 对象", code="validation_error",
                              details={"field": "payload"})
    return data


def payload_id(data: Any, key: str) -> int:
    """A positive id from a payload: an integer (or its digits) within the database's range.

    Not a float (1e308), a bool, a dict or a list: those are refused as `validation_error`.
    """
    value = payload_object(data).get(key)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 10:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ValidationError(f"{key} 必填且须为正整数", field=key)
    return value


def object_payload(handler):
    """Wrap a handler so that no payload, or a non-object one, is a `validation_error` ack."""
    import functools

    @functools.wraps(handler)
    def run(data: Any = None, *args: Any):
        return handler(payload_object(data), *args)

    return run


def socket_principal(auth: Any, *, required: bool = True):
    """The caller of a socket connection: a User or a SiteScreen.

    From `auth={"token": ...}` (an API or site-screen bearer token) given at connect,
    else the Flask-Login session cookie of the page that opened the socket.
    """
    token = auth.get("token") if isinstance(auth, dict) else None
    if token:
        principal = principal_for_token(db.session, str(token))
        if principal is None:
            raise Unauthorized("令牌无效或已吊销", code="invalid_token")
        return principal
    if current_user and current_user.is_authenticated:
        return current_user._get_current_object()
    if required:
        raise Unauthorized("需要登录或令牌", code="login_required")
    return None


def socket_sid() -> str:
    """The Socket.IO session id of the event being handled: a hot handler's (`on_hot`),
    else the one flask-socketio sets on `request` (which Flask's types do not know)."""
    sid = g.get("socket_sid")
    return sid if sid is not None else cast(Any, request).sid
