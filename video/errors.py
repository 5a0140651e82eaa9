"""Errors of the video domain."""

from core.errors import Conflict, DomainError, Forbidden, NotFound, Unauthorized, ValidationError


class BadSdp(DomainError):
    """The SDP offer could not be used (RFC 9725: 400 with a message)."""

    status = 400
    code = "bad_sdp"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class MediaUnavailable(DomainError):
    """The media engine is off in this deployment (YUANJIAO_MEDIA=off)."""

    status = 503
    code = "media_unavailable"


class PreconditionFailed(DomainError):
    """A PATCH whose If-Match names another ICE session of the resource (RFC 9725)."""

    status = 412
    code = "precondition_failed"


class IceRestartUnsupported(DomainError):
    """RFC 9725: a resource that trickles ICE but cannot restart it answers 422."""

    status = 422
    code = "ice_restart_unsupported"


class NotLive(DomainError):
    """WHEP while nothing is on air: the pages wait and retry (Retry-After)."""

    status = 503
    code = "not_live"


__all__ = ["BadSdp", "Conflict", "DomainError", "Forbidden", "IceRestartUnsupported",
           "MediaUnavailable", "NotFound", "NotLive", "PreconditionFailed", "Unauthorized",
           "UnsupportedMediaType", "ValidationError"]
