"""Errors of the sessions domain (the shared kinds; one handler maps them to HTTP)."""

from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError

__all__ = ["Conflict", "Forbidden", "NotFound", "Unauthorized", "ValidationError"]
