"""Attendance: pages (dashboard, sheets, reports, ledger, QR check-in, make-up) and API."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.views import MethodView
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import ValidationError as SchemaError
from sqlalchemy import select

from attendance import exports, live
from attendance import service as svc
from attendance.access import operated_site_id, report_scope
from attendance.errors import DomainError, Forbidden, NotFound, QrRefused, ValidationError
from attendance.models import AttendanceEvent, Correction, LeaveRequest, MakeupTask
from attendance.schemas import (
    AttendanceEventIn,
    AttendanceEventOut,
    AttendanceRowOut,
    CorrectionIn,
    CorrectionOut,
    LeaveRequestIn,
    LeaveRequestOut,
    MakeupProgressIn,
    MakeupTaskOut,
    ReviewOut,
)
from attendance.writer import Append, Request, Task, writer_for
from config import Settings, settings
from core import policy, ratelimit
from core.api import api, current_api_user, current_principal
from core.pagination import SelectPage
from core.timeutil import iso, require_window, zone
from core.types import utcnow
from extensions import csrf, db

pages = Blueprint("attendance_pages", __name__)
blp = ApiBlueprint("attendance", __name__, url_prefix="/api/v1",
                   description="考勤：事件日志、考勤记录、请假、更正、审核锁定、补学")


def init_app(app: Flask) -> None:
    """Register the attendance pages and API."""
    app.register_blueprint(pages)
    api.register_blueprint(blp)
    csrf.exempt(blp)


def _config() -> Settings:
    return settings()


def _default_tz() -> str:
    return settings().default_timezone


# --- API: records and exports -------------------------------------------------------------


def _viewable_occurrence(occurrence_id: int):
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    policy.require(current_principal(), "attendance.view", occurrence)
    return occurrence


def _managed_occurrence(occurrence_id: int):
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    policy.require(current_api_user(), "attendance.manage", occurrence)
    return occurrence


def _row_dict(row: svc.Row) -> dict[str, Any]:
    rec = row.record
    return {"member_id": row.member.id, "name": row.member.name,
            "member_no": row.member.member_no, "org_unit_id": row.member.org_unit_id,
            "org_unit_name": row.member.org_unit.name if row.member.org_unit else "",
            "status": rec.status, "minutes": rec.minutes, "first_join": rec.first_join,
            "last_leave": rec.last_leave, "site_id": row.site.id if row.site else None,
            "site_name": row.site.name if row.site else None, "expected": row.expected,
            "corrected": rec.corrected, "flags": rec.flags, "notes": row.notes}


@blp.route("/occurrences/<int:occurrence_id>/attendance")
class AttendanceRecords(MethodView):
    @blp.response(200, AttendanceRowOut(many=True))
    @blp.paginate(page_size=1000, max_page_size=5000)
    def get(self, occurrence_id: int, pagination_parameters):
        """One row per expected member (and walk-ins): status, minutes, first/last, site."""
        occurrence = _viewable_occurrence(occurrence_id)
        rows = _visible_rows(occurrence)
        pagination_parameters.item_count = len(rows)
        first = pagination_parameters.first_item
        return [_row_dict(r) for r in rows[first:first + pagination_parameters.page_size]]


def _visible_rows(occurrence, principal=None) -> list[svc.Row]:
    """The occurrence's rows the caller may see by name (his subtree, his site...)."""
    rows = svc.rows(db.session, occurrence, config=_config(), now=utcnow())
    return svc.visible_rows(db.session, principal or current_principal(), occurrence, rows)


def _sheet_name(occurrence, ext: str) -> str:
    """``党史讲座-2026-12-02-考勤.xlsx``: what the file is, for the person who saves it."""
    local = occurrence.starts_at.astimezone(zone(occurrence.session.timezone))
    return f"{occurrence.session.title}-{local:%Y-%m-%d}-考勤.{ext}"


def _download(data: bytes, content_type: str, filename: str) -> Response:
    """An attachment named for people (RFC 6266: an ASCII `filename` for old clients, the
    UTF-8 `filename*` for the rest)."""
    from urllib.parse import quote

    from core.spreadsheet import strip_control

    name = strip_control(filename).replace("/", "-").replace("\\", "-").strip() or "export"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                         for c in name)
    # content_type, not mimetype: werkzeug would add a second "; charset=utf-8".
    return Response(data, content_type=content_type, headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; "
                               f"filename*=UTF-8''{quote(name, safe='')}",
        "Cache-Control": "no-store"})


def _meta(occurrence) -> dict[str, Any]:
    from accounts.models import User

    trainer = db.session.get(User, occurrence.session.trainer_id) \
        if occurrence.session.trainer_id else None
    sites = [site.name for site in (db.session.get(svc.Site, sid)
                                    for sid in svc.occurrence_site_ids(db.session, occurrence))
             if site is not None]
    return exports.sheet_meta(occurrence, trainer.display_name or trainer.username
                              if trainer else None, sites)


@blp.route("/occurrences/<int:occurrence_id>/attendance.xlsx")
@blp.response(200, content_type=exports.XLSX_MIME)
def attendance_xlsx(occurrence_id: int):
    """The attendance sheet as xlsx: Chinese headers, a summary sheet per site."""
    occurrence = _viewable_occurrence(occurrence_id)
    rows = _visible_rows(occurrence)
    data = exports.sheet_xlsx(_meta(occurrence), rows, _default_tz())
    return _download(data, exports.XLSX_MIME, _sheet_name(occurrence, "xlsx"))


@blp.route("/occurrences/<int:occurrence_id>/attendance.csv")
@blp.response(200, content_type="text/csv")
def attendance_csv(occurrence_id: int):
    """The attendance sheet as csv, UTF-8 with a BOM (opens cleanly in Excel and WPS)."""
    occurrence = _viewable_occurrence(occurrence_id)
    rows = _visible_rows(occurrence)
    return _download(exports.sheet_csv(rows, _default_tz()), "text/csv; charset=utf-8",
                     _sheet_name(occurrence, "csv"))


# --- API: the event log -------------------------------------------------------------------


def _load_event_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("请求体须为 JSON 对象", field="json")
    return body


@blp.route("/occurrences/<int:occurrence_id>/attendance-events")
class AttendanceEvents(MethodView):
    @blp.response(200, AttendanceEventOut(many=True))
    @blp.paginate(SelectPage, page_size=100, max_page_size=1000)
    def get(self, occurrence_id: int):
        """The stored log, oldest first, each event with its client `event_id`."""
        _viewable_occurrence(occurrence_id)
        return select(AttendanceEvent).where(
            AttendanceEvent.occurrence_id == occurrence_id).order_by(AttendanceEvent.id)

    @blp.doc(requestBody={"required": True, "content": {"application/json": {
        "schema": AttendanceEventIn}}})
    @blp.response(201, AttendanceEventOut)
    @blp.alt_response(200, schema=AttendanceEventOut,
                      description="A repeat of a stored event_id: the stored event")
    def post(self, occurrence_id: int):
        """Check a member in or out (kiosks, card readers); idempotent per `event_id`.

        A repeat of a stored `event_id` from the same caller answers 200 with the stored
        event before anything else is checked; a check-in while checked in at another
        site is 409; `at` outside the occurrence's margins or in the future is 422.
        """
        principal = current_principal()
        body = _load_event_body()
        source = svc.api_source(principal)
        event_id = svc.clean_event_id(body.get("event_id"))
        stored = svc.find_event(db.session, occurrence_id, source, event_id)
        if stored is not None:
            db.session.rollback()
            return stored, 200
        try:
            data = AttendanceEventIn().load(body)
        except SchemaError as exc:
            field, msgs = next(iter(exc.normalized_messages().items()))
            raise ValidationError(f"{field}: {msgs[0] if isinstance(msgs, list) else msgs}",
                                  field=field, details={"fields": exc.messages}) from exc
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        site = svc.get_site(db.session, data["site_id"])
        policy.require(principal, "roll_call.mark", (occurrence, site))
        if data["member_id"] is not None:
            svc.require_check_in_scope(db.session, principal, occurrence, site,
                                       [data["member_id"]])
        actor = getattr(principal, "id", None)
        site_id = site.id
        db.session.rollback()  # reads done: the writer appends and commits
        [(event, created)] = writer_for().append(Request([Append(
            occurrence_id=occurrence_id, type=data["type"], source=source, event_id=event_id,
            member_id=data["member_id"], site_id=site_id, actor_user_id=actor,
            client_time=data["at"], queued=data["queued"],
            clock_offset_ms=data["clock_offset_ms"])],
            now=utcnow()))
        if created:
            live.publish_events([event])
        return event, 201 if created else 200


# --- API: leave, corrections, review ------------------------------------------------------


@blp.route("/occurrences/<int:occurrence_id>/leave-requests")
class LeaveRequests(MethodView):
    @blp.response(200, LeaveRequestOut(many=True))
    @blp.paginate(SelectPage, page_size=100, max_page_size=1000)
    def get(self, occurrence_id: int):
        """Leave requests of an occurrence (managers see all, a member his own)."""
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        user = current_api_user()
        q = select(LeaveRequest).where(LeaveRequest.occurrence_id == occurrence.id)
        if not policy.can(user, "attendance.manage", occurrence):
            q = q.where(LeaveRequest.member_id == svc.member_of(user).id)
        return q.order_by(LeaveRequest.id)

    @blp.arguments(LeaveRequestIn)
    @blp.response(201, LeaveRequestOut)
    def post(self, data, occurrence_id: int):
        """File a leave request: a member for himself, or an organizer for a member."""
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        user = current_api_user()
        member = svc.get_member(db.session, data["member_id"])
        if not policy.can(user, "attendance.manage", occurrence) \
                and svc.member_of(user).id != member.id:
            raise Forbidden("只能为本人请假")
        leave = svc.file_leave(db.session, occurrence=occurrence, member=member,
                               reason=data["reason"], filed_by_id=user.id, now=utcnow())
        db.session.commit()
        return leave


def _decide(leave_id: int, approve: bool):
    leave = db.session.get(LeaveRequest, leave_id)
    if leave is None:
        raise NotFound(f"请假申请不存在：{leave_id}")
    user = current_api_user()
    occurrence = svc.get_occurrence(db.session, leave.occurrence_id)
    policy.require(user, "attendance.correct", (occurrence, leave.member_id))
    leave_id, occurrence_id, user_id = leave.id, leave.occurrence_id, user.id
    db.session.rollback()  # checks done: the writer decides, in its turn

    def decide(session, now):
        return svc.decide_leave(session, leave=session.get(LeaveRequest, leave_id),
                                approve=approve, user_id=user_id, now=now)

    leave = writer_for().run(Task(decide, utcnow()))
    live.publish_changed(occurrence_id, "leave")
    return leave


@blp.route("/leave-requests/<int:leave_id>/approve", methods=["POST"])
@blp.response(200, LeaveRequestOut)
def approve_leave(leave_id: int):
    """Approve a leave request (organizer in scope): the member becomes excused."""
    return _decide(leave_id, True)


@blp.route("/leave-requests/<int:leave_id>/reject", methods=["POST"])
@blp.response(200, LeaveRequestOut)
def reject_leave(leave_id: int):
    """Reject a leave request (organizer in scope)."""
    return _decide(leave_id, False)


@blp.route("/occurrences/<int:occurrence_id>/corrections")
class Corrections(MethodView):
    @blp.response(200, CorrectionOut(many=True))
    @blp.paginate(SelectPage, page_size=100, max_page_size=1000)
    def get(self, occurrence_id: int):
        """The audit trail of corrections: who, when, member, before, after, reason."""
        _managed_occurrence(occurrence_id)
        return select(Correction).where(
            Correction.occurrence_id == occurrence_id).order_by(Correction.id)

    @blp.arguments(CorrectionIn)
    @blp.response(201, CorrectionOut)
    def post(self, data, occurrence_id: int):
        """Correct a member's status and/or minutes; a reason is required."""
        occurrence = _managed_occurrence(occurrence_id)
        policy.require(current_api_user(), "attendance.correct",
                       (occurrence, data["member_id"]))
        occurrence_id, user_id, config = occurrence.id, current_api_user().id, _config()
        db.session.rollback()  # checks done: the writer corrects, in its turn

        def correct(session, now):
            return svc.correct(
                session, occurrence=svc.get_occurrence(session, occurrence_id),
                member_id=data["member_id"], status=data["status"], minutes=data["minutes"],
                reason=data["reason"], user_id=user_id, config=config, now=now)

        correction = writer_for().run(Task(correct, utcnow()))
        live.publish_changed(occurrence_id, "correction")
        return correction


def _set_lock(occurrence_id: int, locked: bool):
    occurrence = _managed_occurrence(occurrence_id)
    policy.require(current_api_user(), "attendance.lock", occurrence)
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise ValidationError("请求体须为 JSON 对象", field="json")
    early, reason = body.get("early", False), body.get("reason")
    if not isinstance(early, bool):
        raise ValidationError("early 须为布尔值", field="early")
    if reason is not None and not isinstance(reason, str):
        raise ValidationError("reason 须为文本", field="reason")
    user = current_api_user()
    actor = SimpleNamespace(id=user.id, role=user.role)
    occurrence_id, username, address = occurrence.id, user.username, request.remote_addr
    db.session.rollback()  # checks done: the writer locks, between two of its batches

    def set_lock(session, now):
        from accounts.models import User
        from accounts.service import audit

        review = svc.set_lock(session, occurrence=svc.get_occurrence(session, occurrence_id),
                              locked=locked, user=actor, now=now, early=early,
                              reason=reason)
        audit(session, "occurrence_locked" if locked else "occurrence_unlocked",
              actor=session.get(User, actor.id), username=username,
              target=f"occurrence:{occurrence_id}", address=address, now=now)
        return review

    review = writer_for().run(Task(set_lock, utcnow()))
    live.publish_changed(occurrence_id, "lock")
    return review


@blp.route("/occurrences/<int:occurrence_id>/lock", methods=["POST"])
@blp.response(200, ReviewOut)
def lock(occurrence_id: int):
    """Lock a reviewed occurrence: no further events or corrections.

    Before the occurrence's end: 409 `not_ended`, unless the body says
    `{"early": true, "reason": "..."}` (audited; the records stop counting at the lock)."""
    return _set_lock(occurrence_id, True)


@blp.route("/occurrences/<int:occurrence_id>/unlock", methods=["POST"])
@blp.response(200, ReviewOut)
def unlock(occurrence_id: int):
    """Unlock (admin only)."""
    return _set_lock(occurrence_id, False)


# --- API: make-up study -------------------------------------------------------------------


@blp.route("/makeup-tasks")
@blp.response(200, MakeupTaskOut(many=True))
def my_makeup_tasks():
    """The calling member's make-up tasks (created for missed recorded occurrences)."""
    member = svc.member_of(current_api_user())
    tasks = svc.makeup_tasks_of_member(db.session, member, config=_config(), now=utcnow())
    db.session.commit()
    return tasks


def _own_task(task_id: int) -> MakeupTask:
    task = db.session.get(MakeupTask, task_id)
    member = svc.member_of(current_api_user())
    if task is None or task.member_id != member.id:
        raise NotFound(f"补学任务不存在：{task_id}")
    return task


@blp.route("/makeup-tasks/<int:task_id>/progress", methods=["POST"])
@blp.arguments(MakeupProgressIn)
@blp.response(200, MakeupTaskOut)
def makeup_progress(data, task_id: int):
    """Heartbeat while the recording plays: the played ranges, merged server-side."""
    task = _own_task(task_id)
    recording = svc.recording_for(db.session, task.occurrence_id)
    duration = (recording.duration_seconds if recording and recording.duration_seconds
                else data["duration"]) or 0.0
    svc.makeup_progress(db.session, task=task, ranges=data["ranges"], duration=duration,
                        share=settings().makeup_share,
                        now=utcnow())
    db.session.commit()
    return task


# --- pages --------------------------------------------------------------------------------


def _page_user():
    return current_user._get_current_object()


def _page_occurrence(occurrence_id: int, *, manage: bool):
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    user = _page_user()
    if manage:
        policy.require(user, "attendance.manage", occurrence)
    else:
        policy.require(user, "attendance.view", occurrence)
    return occurrence


@pages.route("/attendance/<int:occurrence_id>")
@login_required
def dashboard(occurrence_id: int):
    """The organizer's live dashboard of one occurrence."""
    occurrence = _page_occurrence(occurrence_id, manage=True)
    now = utcnow()
    rows = _visible_rows(occurrence, current_user._get_current_object())
    names = {r.member.id for r in rows}
    leaves = [lr for lr in db.session.scalars(select(LeaveRequest).where(
        LeaveRequest.occurrence_id == occurrence.id).order_by(LeaveRequest.id))
        if lr.member_id in names]
    corrections = [c for c in db.session.scalars(select(Correction).where(
        Correction.occurrence_id == occurrence.id).order_by(Correction.id.desc()))
        if c.member_id in names]
    member_names, user_names = svc.names_for(
        db.session, member_ids={x.member_id for x in leaves} | {c.member_id for c in corrections},
        user_ids={c.corrected_by_id for c in corrections if c.corrected_by_id}
        | {x.decided_by_id for x in leaves if x.decided_by_id})
    return render_template("attendance/dashboard.html", occurrence=occurrence, rows=rows,
                           leaves=leaves, corrections=corrections,
                           member_names=member_names, user_names=user_names,
                           locked=svc.is_locked(db.session, occurrence.id),
                           ended=now >= occurrence.ends_at, labels=svc.STATUS_LABELS,
                           correction_labels=svc.CORRECTION_LABELS,
                           status_labels_json=json.dumps(
                               {k: _(v) for k, v in svc.STATUS_LABELS.items()},
                               ensure_ascii=False),
                           tz=occurrence.session.timezone)


@pages.route("/attendance/<int:occurrence_id>/screen/<int:site_id>")
def screen(occurrence_id: int, site_id: int):
    """A room screen: the rotating QR and the present count (login, or ?token= of a site)."""
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    site = svc.get_site(db.session, site_id)
    token = request.args.get("token")
    can_operate = False
    if token:
        from accounts.service import token_lookup

        row = token_lookup(db.session, token)
        if row is None or row.site_id != site.id:
            raise Forbidden(_("学习点令牌无效"))
        svc.require_site_of_occurrence(db.session, occurrence, site)
    elif current_user.is_authenticated:
        policy.require(current_user, "roll_call.mark", (occurrence, site))
        can_operate = True
    else:
        return redirect(url_for("accounts.login", next=request.full_path))
    return render_template("attendance/screen.html", occurrence=occurrence, site=site,
                           site_token=token, can_operate=can_operate)


# --- the operator's roll call (a phone or tablet; works offline, see static/js/roll_call.js)


def _roll_call_site(occurrence_id: int, site_id: int):
    """The occurrence and site a logged-in user may take the roll call of (else 403)."""
    occurrence = svc.get_occurrence(db.session, occurrence_id)
    site = svc.get_site(db.session, site_id)
    policy.require(_page_user(), "roll_call.mark", (occurrence, site))
    return occurrence, site


@pages.route("/live/<int:occurrence_id>/site/<int:site_id>/roll-call")
@login_required
def roll_call(occurrence_id: int, site_id: int):
    """点名: the site's expected members, one tap to check each in or out, walk-ins."""
    occurrence, site = _roll_call_site(occurrence_id, site_id)
    return render_template("attendance/roll_call.html", occurrence=occurrence, site=site)


@pages.route("/live/<int:occurrence_id>/site/<int:site_id>/roll-call/state.json")
@login_required
def roll_call_state(occurrence_id: int, site_id: int):
    """The roll call's roster (expected and present here) and the server's clock, from
    which the page measures its device's offset for marks queued offline."""
    occurrence, site = _roll_call_site(occurrence_id, site_id)
    now = utcnow()
    snap = svc.snapshot(db.session, occurrence, config=_config(), now=now)
    mine: dict[str, Any] = next((b for b in snap["sites"] if b["site_id"] == site.id),
                {"expected": [], "present": []})
    response = jsonify({"occurrence_id": occurrence.id, "site_id": site.id,
                        "server_time": iso(now), "locked": snap["locked"],
                        "expected": mine["expected"], "present": mine["present"]})
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.route("/live/<int:occurrence_id>/site/<int:site_id>/roll-call/members")
@login_required
def roll_call_members(occurrence_id: int, site_id: int):
    """Walk-ins: members of the organization found by name, number or phone."""
    from org.service import walk_in_candidates

    _occurrence, site = _roll_call_site(occurrence_id, site_id)
    found = walk_in_candidates(db.session, site, request.args.get("q", ""))
    return jsonify([{"member_id": m.id, "name": m.name, "member_no": m.member_no,
                     "org_unit": m.org_unit.name} for m in found])


@pages.route("/live/roll-call-sw.js")
def roll_call_worker():
    """The roll call's service worker, served under /live/ so that its scope covers every
    roll-call page: it keeps the page and its assets for a reload without network."""
    with current_app.open_resource("static/js/roll_call_sw.js") as f:
        body = f.read()
    return Response(body, mimetype="text/javascript", headers={"Cache-Control": "no-cache"})


@pages.route("/attendance/<int:occurrence_id>/sign-in-sheet")
@login_required
def sign_in_sheet(occurrence_id: int):
    """签到表: a printable sheet per site, with the derived times and a signature column."""
    occurrence = _page_occurrence(occurrence_id, manage=False)
    rows = _visible_rows(occurrence, current_user._get_current_object())
    by_site: dict[str, list] = {}
    for row in rows:
        by_site.setdefault(row.site.name if row.site else _("个人在线/其他"), []).append(row)
    return render_template("attendance/sign_in_sheet.html", occurrence=occurrence,
                           by_site=by_site, labels=svc.STATUS_LABELS,
                           trainer_name=_meta(occurrence)["trainer"],
                           tz=occurrence.session.timezone)


@pages.route("/attendance/<int:occurrence_id>/absentees")
@login_required
def absentees(occurrence_id: int):
    """Absent and excused members, with their make-up status."""
    occurrence = _page_occurrence(occurrence_id, manage=True)
    items = svc.absentees(db.session, occurrence, config=_config(), now=utcnow())
    db.session.commit()
    shown = {r.member.id for r in svc.visible_rows(
        db.session, current_user._get_current_object(), occurrence,
        [item["row"] for item in items])}
    items = [item for item in items if item["row"].member.id in shown]
    return render_template("attendance/absentees.html", occurrence=occurrence, items=items,
                           labels=svc.STATUS_LABELS,
                           has_recording=svc.recording_for(db.session, occurrence.id)
                           is not None)


def _date_arg(name: str, default: dt.date) -> dt.date:
    value = request.args.get(name)
    if not value:
        return default
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(_("日期格式应为 YYYY-MM-DD"), field=name) from exc
    return require_window(day, name)


def _scope_units(user) -> list[int] | None:
    if not policy.can(user, "attendance.reports"):
        raise Forbidden(_("当前角色无权查看考勤报表"))
    return report_scope(db.session, user)[0]


@pages.route("/attendance/reports")
@login_required
def reports():
    """Attendance per member and per branch of an org unit over a date range."""
    user = _page_user()
    scope = _scope_units(user)
    tz = zone(_default_tz())
    today = utcnow().astimezone(tz).date()
    presets = svc.period_presets(today)
    preset = request.args.get("preset")
    if preset is not None and preset not in presets:
        raise ValidationError(_("未知的统计期间"), field="preset")
    start_d, end_d = presets[preset][1:] if preset else (
        _date_arg("start", today.replace(day=1)), _date_arg("end", today))
    if end_d < start_d:
        raise ValidationError(_("结束日期不能早于开始日期"), field="end")
    unit_id = request.args.get("unit_id", type=int)
    if unit_id is not None and scope is not None and unit_id not in scope:
        raise Forbidden(_("无权查看该组织"))
    start = dt.datetime.combine(start_d, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(end_d + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    data = svc.report(db.session, unit_id=unit_id, unit_ids=scope, start=start, end=end,
                      config=_config(), now=utcnow(),
                      home_site_id=operated_site_id(user))
    from org.models import OrgUnit

    q = select(OrgUnit).order_by(OrgUnit.path)
    if scope is not None:
        q = q.where(OrgUnit.id.in_(scope))
    units = db.session.scalars(q).all()
    if request.args.get("format") == "xlsx":
        chosen = next((u.name for u in units if u.id == unit_id), None)
        scope_name = chosen or (units[0].name if len(units) == 1 else "全部组织")
        period = f"{start_d:%Y-%m-%d} 至 {end_d:%Y-%m-%d}"
        return _download(exports.report_xlsx(data, scope=scope_name, period=period),
                         exports.XLSX_MIME,
                         f"{scope_name}-考勤统计-{start_d:%Y%m%d}-{end_d:%Y%m%d}.xlsx")
    return render_template("attendance/reports.html", data=data, units=units,
                           unit_id=unit_id, start=start_d, end=end_d, tz=_default_tz(),
                           presets=presets, preset=preset,
                           can_open_dashboard=policy.can(user, "attendance.ledger"))


@pages.route("/attendance/ledger")
@login_required
def ledger():
    """学时台账: annual study hours per member against the requirement; xlsx export."""
    user = _page_user()
    if not policy.can(user, "attendance.ledger"):
        raise Forbidden(_("当前角色无权查看学时台账"))
    scope = _scope_units(user)
    year = request.args.get("year", type=int) or utcnow().astimezone(
        zone(_default_tz())).year
    if not 2000 <= year <= 2100:
        raise ValidationError(_("年份无效"), field="year")
    data = svc.ledger(db.session, year=year, unit_ids=scope, config=_config(), now=utcnow(),
                      tz=_default_tz())
    if request.args.get("format") == "xlsx":
        return _download(exports.ledger_xlsx(data), exports.XLSX_MIME,
                         f"{year}年学时台账.xlsx")
    return render_template("attendance/ledger.html", data=data, year=year)


def _qr_check_in(ok: svc.QrCheckIn, now) -> AttendanceEvent:
    """A QR check-in that passed `svc.qr_check_in_rules`, through the group-commit writer."""
    append = Append(occurrence_id=ok.occurrence.id, type="qr_check_in", source=ok.source,
                    event_id=ok.event_id, member_id=ok.member.id, site_id=ok.site.id,
                    actor_user_id=current_user.id)
    db.session.rollback()
    [(event, _)] = writer_for().append(Request(
        [append], now=now, repeat_error=QrRefused("该二维码您已使用过", code="qr_reused")))
    return event


@pages.route("/checkin/<token>", methods=["GET", "POST"])
@login_required
@ratelimit.limit_qr_check_ins
def checkin(token: str):
    """The member's phone, from the room screen's QR: confirm, then check in."""
    from flask_wtf.csrf import validate_csrf

    config = current_app.config
    rotate = settings().qr_rotate_seconds
    code = None
    try:
        member = svc.member_of(current_user)
        occurrence_id, site_id = svc.read_qr_token(config["SECRET_KEY"], token, utcnow(),
                                                   rotate)
        occurrence = svc.get_occurrence(db.session, occurrence_id)
        site = svc.get_site(db.session, site_id)
        if request.method == "POST":
            if config.get("WTF_CSRF_ENABLED", True):
                validate_csrf(request.form.get("csrf_token"))
            code = request.form.get("code", "")[:10]
            now = utcnow()
            ok = svc.qr_check_in_rules(
                db.session, token=token, member=member, secret=config["SECRET_KEY"], now=now,
                rotate_seconds=rotate, code=code, remote_addr=request.remote_addr)
            names = {member.id: member.name}
            event = _qr_check_in(ok, now)
            live.publish_events([event], names)
            return render_template("attendance/checkin.html", done=True, member=member,
                                   occurrence=occurrence, site=site, event=event,
                                   tz=site.timezone)
    except DomainError as exc:
        db.session.rollback()
        if exc.details.get("field") == "code":  # ask again, on the same page
            return render_template("attendance/checkin.html", done=False, member=member,
                                   occurrence=occurrence, site=site, token=token,
                                   tz=site.timezone, code_error=exc), exc.status
        return render_template("attendance/checkin.html", error=exc, token=token), exc.status
    return render_template("attendance/checkin.html", done=False, member=member,
                           occurrence=occurrence, site=site, token=token, tz=site.timezone)


@pages.route("/makeup")
@login_required
def makeup_list():
    """A member's make-up tasks."""
    member = svc.member_of(_page_user())
    tasks = svc.makeup_tasks_of_member(db.session, member, config=_config(), now=utcnow())
    db.session.commit()
    share = settings().makeup_share
    items = []
    for task in tasks:
        occurrence = svc.get_occurrence(db.session, task.occurrence_id)
        recording = svc.recording_for(db.session, task.occurrence_id)
        duration = (recording.duration_seconds or 0) if recording else 0
        items.append({"task": task, "occurrence": occurrence,
                      "watched": round(task.seconds_watched / 60, 1),
                      "required": round(duration * share / 60, 1) if duration else None})
    return render_template("attendance/makeup_list.html", items=items, share=share,
                           tz=_default_tz())


@pages.route("/makeup/<int:task_id>")
@login_required
def makeup_play(task_id: int):
    """Play the recording; the page reports played ranges while it plays."""
    member = svc.member_of(_page_user())
    task = db.session.get(MakeupTask, task_id)
    if task is None or task.member_id != member.id:
        raise NotFound(_("补学任务不存在"))
    recording = svc.recording_for(db.session, task.occurrence_id)
    occurrence = svc.get_occurrence(db.session, task.occurrence_id)
    return render_template("attendance/makeup_play.html", task=task, recording=recording,
                           occurrence=occurrence,
                           share=settings().makeup_share)


@pages.route("/attendance/<int:occurrence_id>/snapshot.json")
@login_required
def snapshot_json(occurrence_id: int):
    """The dashboard's snapshot over HTTP (a fallback when the socket is down)."""
    occurrence = _page_occurrence(occurrence_id, manage=True)
    scope = svc.member_scope(db.session, current_user._get_current_object(), occurrence)
    return jsonify(svc.snapshot(db.session, occurrence, config=_config(), now=utcnow(),
                                name_visible=scope))


@pages.route("/attendance/<int:occurrence_id>/headcount.json")
@login_required
def headcount_json(occurrence_id: int):
    """A lesson's live counts, no names (工作台's rows): who may view the occurrence."""
    occurrence = _page_occurrence(occurrence_id, manage=False)
    snap = svc.snapshot(db.session, occurrence, config=_config(), now=utcnow(),
                        with_names=False)
    out = {k: snap[k] for k in ("occurrence_id", "expected_count", "present_count",
                                "attended_count", "excused_count")}
    # A site's operator reads his room's headcount, as its screen shows it.
    site_id = operated_site_id(current_user)
    mine = next((b for b in snap["sites"] if site_id and b["site_id"] == site_id), None)
    if mine is not None:
        out.update(site_id=site_id, expected_count=mine["expected_count"],
                   present_count=mine["present_count"])
    return jsonify(out)


@pages.app_template_filter("local_time")
def local_time(value: dt.datetime | None, tz: str | None = None, fmt: str = "%H:%M:%S") -> str:
    """A UTC datetime shown in a site's zone."""
    if value is None:
        return ""
    return value.astimezone(zone(tz)).strftime(fmt)


@pages.app_template_global("iso_time")
def iso_time(value: dt.datetime | None) -> str | None:
    return iso(value)
