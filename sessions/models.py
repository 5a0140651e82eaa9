"""Study sessions (once or recurring) and their concrete occurrences."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.timeutil import DEFAULT_TZ
from core.types import UTCDateTime, intpk, utc_datetime, utcnow
from extensions import Model, db

SESSION_KINDS = (
    "party_history_lecture",
    "party_lesson",
    "general_meeting",
    "committee_meeting",
    "group_meeting",
    "other",
)
OCCURRENCE_STATUSES = ("scheduled", "cancelled")

session_sites = Table(
    "session_sites",
    db.metadata,
    Column("session_id", ForeignKey("study_sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id"), primary_key=True),
)

session_org_units = Table(
    "session_org_units",
    db.metadata,
    Column("session_id", ForeignKey("study_sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("org_unit_id", ForeignKey("org_units.id"), primary_key=True),
)


def _new_uid() -> str:
    return f"{uuid.uuid4()}@yuanjiao"


class StudySession(Model):
    """A party-history lecture, Party lesson or meeting; one-off or recurring."""

    __tablename__ = "study_sessions"

    id: Mapped[intpk]
    #: iCalendar UID, stable for the life of the session.
    uid: Mapped[str] = mapped_column(String(255), unique=True, default=_new_uid)
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    trainer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    #: First occurrence's start, UTC; the series is anchored in `timezone` local time.
    starts_at: Mapped[utc_datetime]
    duration_minutes: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TZ)
    #: RFC 5545 RRULE without the "RRULE:" prefix; None for a one-off session.
    rrule: Mapped[str | None] = mapped_column(String(500))
    #: Excluded original starts, ISO 8601 UTC strings.
    exdates: Mapped[list] = mapped_column(JSON, default=list)
    #: Occurrences are materialized up to here (open-ended rules are extended as time passes).
    materialized_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: A member who joins more than this many minutes after the start is late.
    late_after_minutes: Mapped[int] = mapped_column(Integer, default=10)
    #: A member is present after attending at least this share (percent) of the scheduled time.
    present_threshold_percent: Mapped[int] = mapped_column(Integer, default=80)
    #: Video settings for the broadcast.
    video_bitrate_kbps: Mapped[int] = mapped_column(Integer, default=1200)
    video_height: Mapped[int] = mapped_column(Integer, default=480)
    #: iCalendar SEQUENCE of the series, raised on every change.
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    location: Mapped[str] = mapped_column(String(300), default="")
    #: The UID of the calendar event an .ics import created this session from (importing
    #: the file again updates the session instead of adding a second one).
    import_uid: Mapped[str | None] = mapped_column(String(255), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[utc_datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    trainer = relationship("User", foreign_keys=[trainer_id])
    sites = relationship("Site", secondary=session_sites, order_by="Site.id")
    org_units = relationship("OrgUnit", secondary=session_org_units, order_by="OrgUnit.id")
    occurrences: Mapped[list[Occurrence]] = relationship(
        back_populates="session", order_by="Occurrence.starts_at", cascade="all, delete-orphan"
    )


class Occurrence(Model):
    """One concrete meeting of a session, with its own id; can be moved or cancelled alone."""

    __tablename__ = "occurrences"
    __table_args__ = (UniqueConstraint("session_id", "original_start"),)

    id: Mapped[intpk]
    session_id: Mapped[int] = mapped_column(
        ForeignKey("study_sessions.id", ondelete="CASCADE"), index=True
    )
    #: The start the recurrence rule gave it: its RECURRENCE-ID, never changed by a move.
    original_start: Mapped[utc_datetime]
    starts_at: Mapped[utc_datetime] = mapped_column(index=True)
    ends_at: Mapped[utc_datetime] = mapped_column(index=True)
    #: scheduled or cancelled
    status: Mapped[str] = mapped_column(String(20), default="scheduled")
    #: iCalendar SEQUENCE of this occurrence's override, raised when it alone changes.
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    #: True once the occurrence was moved or edited on its own (a RECURRENCE-ID override).
    overridden: Mapped[bool] = mapped_column(default=False)
    #: This occurrence's own title and description (an imported RECURRENCE-ID override
    #: that renames one meeting); None: the session's.
    title_override: Mapped[str | None] = mapped_column(String(200))
    description_override: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[utc_datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    session: Mapped[StudySession] = relationship(back_populates="occurrences")

    @property
    def duration_minutes(self) -> int:
        return int((self.ends_at - self.starts_at).total_seconds() // 60)

    @property
    def title(self) -> str:
        """Its own title, else the session's (API rows carry it beside each occurrence)."""
        return self.title_override or self.session.title

    @property
    def description(self) -> str:
        return self.description_override if self.description_override is not None \
            else self.session.description

    @property
    def timezone(self) -> str:
        """The session's zone, in which the occurrence is shown."""
        return self.session.timezone


class CalendarFeed(Model):
    """A subscription feed for a site, member, trainer or org unit, behind a revocable token."""

    __tablename__ = "calendar_feeds"
    __table_args__ = (UniqueConstraint("owner_kind", "owner_id"),)

    id: Mapped[intpk]
    #: site, member, trainer or org_unit
    owner_kind: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int] = mapped_column(Integer)
    #: Random nonce inside the signed token; a new nonce revokes every older URL.
    nonce: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    #: A change the data cannot show (a deleted session): the feed's Last-Modified is at
    #: least this, so that If-Modified-Since never hides a removal.
    changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
