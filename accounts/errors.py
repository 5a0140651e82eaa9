"""Errors of the accounts domain."""

from core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)

__all__ = ["Conflict", "Forbidden", "NotFound", "TooManyRequests", "Unauthorized",
           "ValidationError"]
