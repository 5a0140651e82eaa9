"""Video: recordings of broadcasts (and, added by the video work, stream keys)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from core.types import UTCDateTime, intpk, utc_datetime, utcnow
from extensions import Model


class Recording(Model):
    """A broadcast recorded on the server, played back for make-up study (补学)."""

    __tablename__ = "recordings"

    id: Mapped[intpk]
    occurrence_id: Mapped[int] = mapped_column(ForeignKey("occurrences.id"), index=True)
    #: File path relative to YUANJIAO_RECORDINGS_DIR.
    path: Mapped[str] = mapped_column(String(500))
    mime_type: Mapped[str] = mapped_column(String(50), default="video/webm")
    started_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: recording, complete, or failed
    status: Mapped[str] = mapped_column(String(20), default="recording")


class StreamKey(Model):
    """A trainer's WHIP bearer key for one occurrence (OBS or the broadcast page).

    Only the SHA-256 is stored; regenerating revokes the previous key.
    """

    __tablename__ = "stream_keys"

    id: Mapped[intpk]
    occurrence_id: Mapped[int] = mapped_column(ForeignKey("occurrences.id"), index=True)
    #: The trainer (or admin) the key publishes as.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    revoked: Mapped[bool] = mapped_column(default=False)
