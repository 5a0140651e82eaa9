"""Socket.IO plumbing shared by every namespace: who is calling, and refusals as acks."""

from __future__ import annotations

import logging
from typing import Any

from flask_login import current_user

from core.errors import DomainError, Unauthorized, socket_ack
from core.principals import principal_for_token
from extensions import db, socketio

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Register the one default error handler: a refused event is acked, never dropped."""

    @socketio.on_error_default
    def _refuse(error: Exception) -> dict[str, Any]:
        db.session.rollback()
        if not isinstance(error, DomainError):
            log.exception("socket handler failed", exc_info=error)
        return socket_ack(error)


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
