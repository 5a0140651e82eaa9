"""Errors of the sessions domain (the shared kinds; one handler maps them to HTTP)."""

from core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationError,
)

__all__ = ["Conflict", "DomainError", "Forbidden", "NotFound", "Unauthorized",
           "ValidationError"]
