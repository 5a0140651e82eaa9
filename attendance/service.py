"""Attendance operations: append events, derive records, leave, corrections, review,
make-up. This module is the domain's front: it re-exports the public names of the
modules below, each one part of the service.

Functions take the database session, plain values and an explicit `now`; they validate,
change, flush and return. They never commit, never read the request and never emit:
views and socket handlers commit once, then emit.

Event sources (the idempotency key is ``(occurrence_id, source, event_id)``):

* ``site:<site_id>``: roll call and screen events sent over the socket for a site
  (by its screen or its operator; ``actor_user_id`` tells who);
* ``viewer:member:<member_id>``: a member watching alone;
* ``qr:member:<member_id>``: QR check-ins (the event id is the token's digest, so each
  member can use one token once);
* ``api:user:<user_id>`` / ``api:site:<site_id>``: the REST API, per caller, so that two
  integrations counting their event ids from 1 never swallow each other's events;
* ``server``: facts the server observes (a screen's socket closing);
* ``organizer:user:<user_id>``: leave decisions, corrections and locks, for the log.

The parts, each a module of its own:

* `attendance.lookups`: occurrences, sites and members by id; rules; who is expected;
* `attendance.access`: who may manage, view or operate; scopes of joint occurrences;
* `attendance.log`: the event log, time bounds, roll calls, presence of sites;
* `attendance.qr`: QR check-in, the room code, the network rule;
* `attendance.records`: the one derivation (records, rows, snapshots, offline periods);
* `attendance.review`: leave, corrections and locks;
* `attendance.reports`: reports and the study-hours ledger;
* `attendance.makeup`: make-up study.
"""

from __future__ import annotations

from attendance.access import (  # noqa: F401
    api_source,
    can_manage_occurrence,
    can_view_occurrence,
    is_screen,
    member_of,
    member_scope,
    require_check_in_scope,
    require_manage_occurrence,
    require_manage_whole_occurrence,
    require_member_in_scope,
    require_operate_site,
    require_site_of_occurrence,
    require_view_occurrence,
    visible_rows,
)
from attendance.log import (  # noqa: F401
    CLOCK_SKEW,
    MEMBER_EVENT_TYPES,
    OFFLINE_MAX,
    QUEUED_MARGIN,
    _insert,
    bound_time,
    clean_event_id,
    events_of,
    find_event,
    is_locked,
    member_events,
    offline_max,
    parse_client_time,
    queued_payload,
    record_event,
    require_unlocked,
    roll_call_appends,
)
from attendance.lookups import (  # noqa: F401
    expected_member_ids,
    get_member,
    get_occurrence,
    get_site,
    is_expected,
    rules_for,
)
from attendance.makeup import (  # noqa: F401
    absentees,
    ensure_makeup_tasks,
    makeup_progress,
    makeup_tasks_of_member,
    recording_for,
)
from attendance.qr import (  # noqa: F401
    QrCheckIn,
    current_room_code,
    make_qr_token,
    qr_check_in_rules,
    qr_slot,
    read_qr_token,
    room_code,
)
from attendance.reactions import occurrences_with_attendance  # noqa: F401
from attendance.records import (  # noqa: F401
    ATTENDED,
    CORRECTION_LABELS,
    N_,
    STATUS_LABELS,
    Row,
    approved_leave_ids,
    broadcast_end,
    format_periods,
    names_for,
    overrides_of,
    records,
    rows,
    site_offline_periods,
    snapshot,
)
from attendance.reports import (  # noqa: F401
    ledger,
    member_totals,
    occurrences_for_units,
    period_presets,
    rate,
    report,
)
from attendance.review import (  # noqa: F401
    correct,
    decide_leave,
    file_leave,
    set_lock,
)
from org.models import Member, OrgUnit, Site  # noqa: F401  (views name them through svc)
from sessions.targets import occurrence_site_ids, occurrence_unit_ids  # noqa: F401
