"""Attendance: the append-only event log, and the records organizers act on.

Every attendance fact is an `AttendanceEvent` row; statuses and minutes are derived from
the log by `attendance.rules` and are never stored, except where an organizer overrides
them with a `Correction` (which is itself audited).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.types import UTCDateTime, intpk, utc_datetime, utcnow
from extensions import Model

#: Every event type the log accepts.
EVENT_TYPES = (
    "site_online",
    "site_offline",
    "check_in",
    "check_out",
    "qr_check_in",
    "viewer_join",
    "viewer_heartbeat",
    "viewer_leave",
    "correction",
    "leave_approved",
    "leave_rejected",
    "locked",
    "unlocked",
)
LEAVE_STATUSES = ("requested", "approved", "rejected")
STATUSES = ("present", "late", "left_early", "absent", "excused")


class AttendanceEvent(Model):
    """One fact, appended once: a retried event (same source and event id) is stored once."""

    __tablename__ = "attendance_events"
    # The writer's hot lookups (repeats by event id, open check-ins by member) use indexes
    # that lead with the column they search by, not with the occurrence: PostgreSQL's
    # planner, whose statistics cannot know how many events the live occurrence has by
    # now, otherwise read every event of the occurrence for each batch (bench/attendance.py).
    __table_args__ = (
        UniqueConstraint("event_id", "source", "occurrence_id", name="uq_attendance_event_once"),
        Index("ix_attendance_events_member_occ", "member_id", "occurrence_id"),
        Index("ix_attendance_events_occ_member", "occurrence_id", "member_id"),
    )

    id: Mapped[intpk]
    #: RESTRICT: an occurrence with attendance is never deleted, not even by a bug in the
    #: scheduling side's guard (the event log is the record an auditor reads).
    occurrence_id: Mapped[int] = mapped_column(ForeignKey(
        "occurrences.id", ondelete="RESTRICT", name="fk_attendance_events_occurrence_id"))
    #: None for site-wide facts (a site screen going online or offline).
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    type: Mapped[str] = mapped_column(String(30))
    #: Who sent it, e.g. "site:3", "viewer:member:12", "api:user:5", "api:site:3", "qr".
    source: Mapped[str] = mapped_column(String(80))
    #: The client's own id for the fact, unique per (occurrence, source): the retry key.
    event_id: Mapped[str] = mapped_column(String(100))
    #: When the server stored it; the time the rules use unless a bounded `client_time`.
    server_time: Mapped[utc_datetime] = mapped_column(default=utcnow)
    #: The time the client says the fact happened (bounded by the service), if given.
    client_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)

    @property
    def at(self) -> dt.datetime:
        """The time the fact counts at: the client's bounded time, else the server's."""
        return self.client_time or self.server_time


class LeaveRequest(Model):
    """请假: filed by a member or an organizer; an approved request makes a member excused."""

    __tablename__ = "leave_requests"
    __table_args__ = (Index("ix_leave_requests_occ_member", "occurrence_id", "member_id"),)

    id: Mapped[intpk]
    occurrence_id: Mapped[int] = mapped_column(
        ForeignKey("occurrences.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    #: requested, approved or rejected
    status: Mapped[str] = mapped_column(String(20), default="requested")
    filed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    filed_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Correction(Model):
    """An organizer's override of a member's derived record, with the audit trail."""

    __tablename__ = "attendance_corrections"
    __table_args__ = (Index("ix_corrections_occ_member", "occurrence_id", "member_id"),)

    id: Mapped[intpk]
    occurrence_id: Mapped[int] = mapped_column(
        ForeignKey("occurrences.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    #: The new status (one of STATUSES), or None to keep the derived one.
    status: Mapped[str | None] = mapped_column(String(20))
    #: The new minutes, or None to keep the derived ones.
    minutes: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    #: The record as shown before and after the correction: {"status", "minutes"}.
    before: Mapped[dict] = mapped_column(JSON, default=dict)
    after: Mapped[dict] = mapped_column(JSON, default=dict)
    corrected_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    corrected_at: Mapped[utc_datetime] = mapped_column(default=utcnow)


class OccurrenceReview(Model):
    """A reviewed occurrence: while locked, no further events or corrections are accepted."""

    __tablename__ = "occurrence_reviews"

    occurrence_id: Mapped[int] = mapped_column(
        ForeignKey("occurrences.id", ondelete="CASCADE"), primary_key=True
    )
    locked: Mapped[bool] = mapped_column(default=False)
    locked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    unlocked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    unlocked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class MakeupTask(Model):
    """补学: an absentee watches the recording; only seconds actually played count."""

    __tablename__ = "makeup_tasks"
    __table_args__ = (UniqueConstraint("occurrence_id", "member_id", name="uq_makeup_once"),)

    id: Mapped[intpk]
    occurrence_id: Mapped[int] = mapped_column(
        ForeignKey("occurrences.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id"))
    #: Length of the union of played ranges (seconds of the recording).
    seconds_watched: Mapped[float] = mapped_column(Float, default=0.0)
    #: Merged, sorted [[start, end], ...] positions played, so replays count once.
    watched_ranges: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[utc_datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    member = relationship("Member")
