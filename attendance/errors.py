"""Attendance errors: the core DomainErrors, with attendance's own codes."""

from __future__ import annotations

from core.errors import (  # noqa: F401  (re-exported for the attendance package)
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationError,
)


class Locked(Conflict):
    """The occurrence was reviewed and locked: no further events or corrections."""

    code = "occurrence_locked"


class CheckedInElsewhere(Conflict):
    """A member cannot be checked in at two sites at once."""

    code = "checked_in_elsewhere"


class QrRefused(DomainError):
    """An expired, forged, foreign or already used QR token."""

    status = 400
    code = "qr_refused"


class QrNotAllowed(QrRefused):
    """A valid QR token this member may not use here: not expected, or off the site's
    network."""

    status = 403
