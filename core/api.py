"""The JSON API: flask-smorest with our error format, and bearer-token authentication."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_login import current_user
from flask_smorest import Api as SmorestApi
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from core import policy
from core.errors import Forbidden, Unauthorized, localize
from core.principals import SiteScreen, principal_for_token
from extensions import csrf, db

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def is_api_request() -> bool:
    return request.path.startswith(("/api/", "/whip/", "/whep/"))


def http_error_payload(error: HTTPException) -> dict[str, Any]:
    """Our `{"error", "message", "details"}` body for a werkzeug/webargs HTTP error."""
    data = getattr(error, "data", None) or {}
    details: dict[str, Any] = {}
    message = error.description or error.name
    messages = data.get("messages") or data.get("errors")
    if messages:
        # webargs: {"json": {"field": ["msg", ...]}}; flatten to field -> messages
        fields: dict[str, Any] = {}
        for location, per_field in messages.items():
            if isinstance(per_field, dict):
                fields.update(per_field)
            else:
                fields[location] = per_field
        details["fields"] = fields
        first_field, first_msgs = next(iter(fields.items()))
        first = first_msgs[0] if isinstance(first_msgs, list) and first_msgs else first_msgs
        if isinstance(first, dict):  # nested schema
            first = next(iter(first.values()))
        message = f"{first_field}: {first}"
        details["field"] = first_field
    elif data.get("message"):
        message = data["message"]
    code = ERROR_CODES.get(error.code or 500, "error")
    return {"error": code, "message": localize(str(message), code, error.code or 500, details),
            "details": details}


class ErrorOut(Schema):
    """Every API error: a stable code, a sentence in the reader's language, details."""

    error = fields.String(required=True, metadata={"description": "stable machine code"})
    message = fields.String(required=True)
    details = fields.Dict(metadata={"description": "structured extras: the field, rows, "
                                                   "retry_after …"})


class Api(SmorestApi):
    """flask-smorest's Api, answering API errors in our format and leaving pages alone."""

    #: The documented error body (OpenAPI `Error`) is the one we answer.
    ERROR_SCHEMA = ErrorOut

    def handle_http_exception(self, error: HTTPException):
        if not is_api_request():
            return error
        # Keep werkzeug's own headers (a 405's `Allow`), not its HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        if error.code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return http_error_payload(error), error.code, headers


api = Api()


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def current_principal(*, allow_session: bool = True):
    """The caller: a User or a SiteScreen, from the bearer token or the login session.

    Cookie sessions on unsafe methods must carry the CSRF token (X-CSRFToken header),
    so that a page on another site cannot act for a logged-in organizer.
    """
    if "principal" in g:
        return g.principal
    token = bearer_token()
    principal = None
    if token:
        principal = principal_for_token(db.session, token)
        if principal is None:
            raise Unauthorized("令牌无效、已过期或已吊销", code="invalid_token")
    elif allow_session and current_user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()
        principal = current_user._get_current_object()
    if principal is None:
        raise Unauthorized("需要登录或 Bearer 令牌", code="login_required")
    g.principal = principal
    return principal


def current_api_user(action: str | None = None):
    """The calling User (not a site screen), optionally one who `can` do `action`
    (core.policy; with no resource: the roles that may do it at all)."""
    principal = current_principal()
    if isinstance(principal, SiteScreen):
        raise Forbidden("学习点屏幕令牌不能执行此操作")
    if action is not None and not policy.can(principal, action):
        raise Forbidden("当前角色无权执行此操作", details={"role": principal.role})
    return principal
