"""Leave, corrections and review (locks), audited in the log.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attendance.errors import (
    Conflict,
    Forbidden,
    ValidationError,
)
from attendance.log import is_locked, record_event, require_unlocked
from attendance.lookups import get_member, get_occurrence
from attendance.models import (
    STATUSES,
    Correction,
    LeaveRequest,
    OccurrenceReview,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from attendance.records import records
from config import Settings
from org.models import Member
from sessions.models import Occurrence

log = logging.getLogger(__name__)


def file_leave(session: Session, *, occurrence: Occurrence, member: Member, reason: str,
               filed_by_id: int | None, now: dt.datetime) -> LeaveRequest:
    reason = (reason or "").strip()
    if not reason or len(reason) > 1000:
        raise ValidationError("请假事由必填，且不超过 1000 字", field="reason")
    require_unlocked(session, occurrence.id)
    existing = session.scalar(select(LeaveRequest).where(
        LeaveRequest.occurrence_id == occurrence.id, LeaveRequest.member_id == member.id,
        LeaveRequest.status.in_(("requested", "approved"))))
    if existing is not None:
        raise Conflict("该党员已有请假申请", details={"leave_request_id": existing.id})
    leave = LeaveRequest(occurrence_id=occurrence.id, member_id=member.id, reason=reason,
                         filed_by_id=filed_by_id, filed_at=now)
    session.add(leave)
    session.flush()
    return leave


def decide_leave(session: Session, *, leave: LeaveRequest, approve: bool, user_id: int,
                 now: dt.datetime) -> LeaveRequest:
    require_unlocked(session, leave.occurrence_id)
    if leave.status != "requested" and not (approve and leave.status == "rejected"):
        raise Conflict("该请假申请已处理", details={"status": leave.status})
    leave.status = "approved" if approve else "rejected"
    leave.decided_by_id, leave.decided_at = user_id, now
    occurrence = get_occurrence(session, leave.occurrence_id)
    record_event(session, occurrence=occurrence,
                 type="leave_approved" if approve else "leave_rejected",
                 source=f"organizer:user:{user_id}", event_id=f"leave:{leave.id}:{leave.status}",
                 now=now, member_id=None, actor_user_id=user_id,
                 payload={"member_id": leave.member_id, "leave_request_id": leave.id})
    session.flush()
    return leave


def correct(session: Session, *, occurrence: Occurrence, member_id: int,
            status: str | None, minutes: float | None, reason: str, user_id: int,
            config: Settings, now: dt.datetime) -> Correction:
    """Override a member's status and/or minutes; audited with before and after."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("更正需要填写原因", field="reason")
    if status is None and minutes is None:
        raise ValidationError("请给出更正后的状态或时长", field="status")
    if status is not None and status not in STATUSES:
        raise ValidationError(f"未知状态：{status}", field="status",
                              details={"allowed": list(STATUSES)})
    max_minutes = (occurrence.ends_at - occurrence.starts_at).total_seconds() / 60
    if minutes is not None and not 0 <= minutes <= max_minutes:
        raise ValidationError(f"时长需在 0–{max_minutes:.0f} 分钟之间", field="minutes")
    require_unlocked(session, occurrence.id)
    get_member(session, member_id)
    before = records(session, occurrence, config=config, now=now, member_ids=[member_id])
    rec = before[member_id]
    correction = Correction(
        occurrence_id=occurrence.id, member_id=member_id, status=status, minutes=minutes,
        reason=reason, corrected_by_id=user_id, corrected_at=now,
        before={"status": rec.status, "minutes": rec.minutes},
        after={"status": status or rec.status,
               "minutes": rec.minutes if minutes is None else round(float(minutes), 1)},
    )
    session.add(correction)
    session.flush()
    record_event(session, occurrence=occurrence, type="correction",
                 source=f"organizer:user:{user_id}", event_id=f"correction:{correction.id}",
                 now=now, actor_user_id=user_id,
                 payload={"member_id": member_id, "correction_id": correction.id,
                          "before": correction.before, "after": correction.after,
                          "reason": reason})
    return correction


def set_lock(session: Session, *, occurrence: Occurrence, locked: bool, user: Any,
             now: dt.datetime, early: bool = False, reason: str | None = None
             ) -> OccurrenceReview:
    """Lock a reviewed occurrence (organizer or admin); only an admin unlocks.

    A lock before the occurrence's end needs `early` and a reason: it freezes the records
    at the lock's moment (nothing after it counts), and the log keeps who did it and why.
    """
    if not locked and user.role != "admin":
        raise Forbidden("只有系统管理员可以解锁")
    reason = (reason or "").strip()
    if locked and now < occurrence.ends_at and not is_locked(session, occurrence.id):
        if not early:
            raise Conflict(
                "学习活动尚未结束，不能锁定考勤；如确需提前锁定，请说明原因（锁定后的签到与观看不再计入）",
                code="not_ended", details={"ends_at": occurrence.ends_at.isoformat()})
        if not reason or len(reason) > 1000:
            raise ValidationError("提前锁定需要填写原因（不超过 1000 字）", field="reason")
    from attendance.writer import lock_occurrence

    lock_occurrence(session, occurrence.id)  # between two batches of the writer
    review = session.get(OccurrenceReview, occurrence.id)
    if review is None:
        review = OccurrenceReview(occurrence_id=occurrence.id, locked=False)
        session.add(review)
    if review.locked == locked:
        return review
    if locked:
        review.locked, review.locked_by_id, review.locked_at = True, user.id, now
    else:
        review.locked, review.unlocked_by_id, review.unlocked_at = False, user.id, now
    session.flush()
    payload = ({"early": True, "reason": reason} if locked and now < occurrence.ends_at
               else {"reason": reason} if reason else None)
    record_event(session, occurrence=occurrence, type="locked" if locked else "unlocked",
                 source=f"organizer:user:{user.id}", event_id=uuid.uuid4().hex, now=now,
                 actor_user_id=user.id, check_lock=False, payload=payload)
    return review
