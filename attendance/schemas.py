"""API schemas of the attendance domain."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from attendance.models import STATUSES


class AttendanceRowOut(Schema):
    member_id = fields.Integer(required=True)
    name = fields.String()
    member_no = fields.String()
    org_unit_id = fields.Integer()
    org_unit_name = fields.String()
    status = fields.String(metadata={"enum": [*STATUSES, "not_started", "not_arrived"],
                                     "description": "not_started / not_arrived before the end "
                                                    "(nobody is absent before the end)"})
    minutes = fields.Float()
    first_join = fields.DateTime(allow_none=True)
    last_leave = fields.DateTime(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    site_name = fields.String(allow_none=True)
    expected = fields.Boolean()
    corrected = fields.Boolean()
    flags = fields.List(fields.String())
    notes = fields.String()


class AttendanceEventIn(Schema):
    """A kiosk's or card reader's fact; `event_id` is its retry key."""

    event_id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    type = fields.String(required=True, validate=validate.OneOf(["check_in", "check_out"]))
    member_id = fields.Integer(required=True)
    site_id = fields.Integer(required=True)
    at = fields.AwareDateTime(load_default=None, allow_none=True,
                              metadata={"description": "The client's time: checked, never "
                                        "used (the fact's time is the server's), except for "
                                        "a mark queued offline"})
    queued = fields.Boolean(load_default=False, metadata={
        "description": "Queued while offline: `at` (required) is when it happened; accepted "
                       "within the occurrence ±30 min and YUANJIAO_OFFLINE_MAX_HOURS of `at`; "
                       "flagged 离线补传"})
    clock_offset_ms = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(
        min=-10**9, max=10**9), metadata={"description": "The device's measured clock offset"})


class AttendanceEventOut(Schema):
    id = fields.Integer()
    event_id = fields.String()
    occurrence_id = fields.Integer()
    type = fields.String()
    source = fields.String()
    member_id = fields.Integer(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    server_time = fields.DateTime()
    client_time = fields.DateTime(allow_none=True)
    actor_user_id = fields.Integer(allow_none=True)
    payload = fields.Dict()


class LeaveRequestIn(Schema):
    member_id = fields.Integer(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class LeaveRequestOut(Schema):
    id = fields.Integer()
    occurrence_id = fields.Integer()
    member_id = fields.Integer()
    reason = fields.String()
    status = fields.String()
    filed_by_id = fields.Integer(allow_none=True)
    decided_by_id = fields.Integer(allow_none=True)
    filed_at = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)


class CorrectionIn(Schema):
    member_id = fields.Integer(required=True)
    status = fields.String(load_default=None, allow_none=True,
                           validate=validate.OneOf(STATUSES))
    minutes = fields.Float(load_default=None, allow_none=True,
                           validate=validate.Range(min=0))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class CorrectionOut(Schema):
    id = fields.Integer()
    occurrence_id = fields.Integer()
    member_id = fields.Integer()
    status = fields.String(allow_none=True)
    minutes = fields.Float(allow_none=True)
    reason = fields.String()
    before = fields.Dict()
    after = fields.Dict()
    corrected_by_id = fields.Integer(allow_none=True)
    corrected_at = fields.DateTime()


class ReviewOut(Schema):
    occurrence_id = fields.Integer()
    locked = fields.Boolean()
    locked_by_id = fields.Integer(allow_none=True)
    locked_at = fields.DateTime(allow_none=True)
    unlocked_by_id = fields.Integer(allow_none=True)
    unlocked_at = fields.DateTime(allow_none=True)


class MakeupTaskOut(Schema):
    id = fields.Integer()
    occurrence_id = fields.Integer()
    member_id = fields.Integer()
    recording_id = fields.Integer(allow_none=True)
    seconds_watched = fields.Float()
    watched_ranges = fields.List(fields.List(fields.Float()))
    completed_at = fields.DateTime(allow_none=True)


class MakeupProgressIn(Schema):
    ranges = fields.List(fields.List(fields.Float(), validate=validate.Length(equal=2)),
                         required=True, validate=validate.Length(max=500),
                         metadata={"description": "Played ranges [[start, end], ...] in "
                                                  "seconds of the recording"})
    duration = fields.Float(load_default=None, allow_none=True,
                            validate=validate.Range(min=0))
