"""Errors of the org domain (org units, sites, members, member import)."""

from core.errors import Conflict, DomainError, Forbidden, NotFound, ValidationError

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "ImportRefused",
    "NotFound",
    "UnsupportedFile",
    "ValidationError",
]


class UnsupportedFile(DomainError):
    """An upload that is neither an xlsx workbook nor a csv text file."""

    status = 400
    code = "unsupported_file"


class ImportRefused(ValidationError):
    """A member file with bad rows: refused whole; `details["rows"]` names each bad row."""

    code = "import_refused"
