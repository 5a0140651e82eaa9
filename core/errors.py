"""Domain errors, and the one place that maps them to HTTP and socket acks."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every domain's errors.

    `code` is a stable machine-readable string, `message` a human sentence
    (already translated where it reaches users), `details` structured extras
    such as the field that was wrong or the occurrence that clashed.
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class ValidationError(DomainError):
    status = 422
    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None,
                 details: dict[str, Any] | None = None, code: str | None = None) -> None:
        details = dict(details or {})
        if field:
            details.setdefault("field", field)
        super().__init__(message, details=details, code=code)


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    status = 409
    code = "conflict"


def socket_ack(error: Exception) -> dict[str, Any]:
    """The ack a socket handler returns when it refuses an event."""
    if isinstance(error, DomainError):
        return {"ok": False, "error": error.code, "message": error.message,
                "details": error.details}
    return {"ok": False, "error": "internal_error", "message": "服务器内部错误"}
