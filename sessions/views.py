"""Scheduling: the dashboard, session pages, the sessions API and calendar feeds."""

from __future__ import annotations

import datetime as dt
import hashlib

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.views import MethodView
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_smorest import Blueprint as ApiBlueprint
from sqlalchemy import select
from sqlalchemy.orm import contains_eager
from werkzeug.http import http_date

from config import settings
from core import policy, ratelimit
from core.api import SiteScreen, api, current_api_user, current_principal
from core.errors import DomainError
from core.pagination import SelectPage
from core.timeutil import MAX_YEAR, MIN_YEAR, in_window, zone
from core.types import utcnow
from extensions import csrf, db
from sessions import recurrence, schemas, service
from sessions.errors import Forbidden, ValidationError
from sessions.models import SESSION_KINDS, Occurrence, StudySession
from sessions.schemas import (
    FeedUrlOut,
    ImportFiles,
    ImportForm,
    ImportOut,
    OccurrenceOut,
    OccurrencePatch,
    OccurrenceQuery,
    PreviewIn,
    PreviewOut,
    RangeQuery,
    SessionIn,
    SessionOut,
    SessionPatch,
    SessionQuery,
)

pages = Blueprint("sessions", __name__)
blp = ApiBlueprint("sessions_api", __name__, url_prefix="/api/v1",
                   description="学习安排、场次与日历订阅")

KIND_LABELS = {
    "party_history_lecture": _l("党史讲座"),
    "party_lesson": _l("党课"),
    "general_meeting": _l("党员大会"),
    "committee_meeting": _l("支委会"),
    "group_meeting": _l("党小组会"),
    "other": _l("其他"),
}


def init_app(app: Flask) -> None:
    app.register_blueprint(pages)
    api.register_blueprint(blp)
    csrf.exempt(blp)

    @app.context_processor
    def _helpers() -> dict:
        return {"session_kind_label": lambda k: str(KIND_LABELS.get(k, k)), "local": local_time,
                "describe_rrule": lambda study: recurrence.describe(
                    study.rrule, study.starts_at, zone(study.timezone))}


def local_time(value: dt.datetime | None, tz_name: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time as text in a zone (templates: `local(occ.starts_at, tz_name)`)."""
    return value.astimezone(zone(tz_name)).strftime(fmt) if value else ""


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


def _range(args: dict) -> tuple[dt.datetime | None, dt.datetime | None]:
    start, end = args.get("start"), args.get("end")
    if start is not None and end is not None and end < start:
        raise ValidationError("to 不能早于 from", field="to")
    return start, end


# --- sessions API ------------------------------------------------------------------------------


@blp.route("/sessions")
class Sessions(MethodView):
    @blp.arguments(SessionQuery, location="query")
    @blp.response(200, SessionOut(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self, args):
        """Sessions the caller may see (filters: kind, site_id, org_unit_id, trainer_id, q)."""
        principal = current_principal()
        return service.sessions_query(db.session, principal, **args)

    @blp.arguments(SessionIn)
    @blp.response(201, SessionOut)
    @blp.alt_response(409, description="A site or the trainer is booked at that time")
    def post(self, data):
        """Schedule a session (one-off or recurring); its occurrences are created at once."""
        actor = current_api_user("session.create")
        study = service.create_session(db.session, actor, data, now=utcnow())
        db.session.commit()
        return study


@blp.route("/sessions/preview", methods=["POST"])
@blp.arguments(PreviewIn(partial=True))
@blp.response(200, PreviewOut)
def preview_session(data):
    """The next occurrences a session form would create and any clash; saves nothing."""
    actor = current_api_user("session.create")
    session_id = data.pop("session_id", None)
    if session_id is None:
        data.setdefault("title", "预览")
        for field in ("starts_at", "duration_minutes"):
            if field not in data:
                raise ValidationError(f"{field} 为必填项", field=field)
    else:
        service.require_edit(db.session, actor, service.get_session(db.session, session_id))
    out = service.preview(db.session, actor, data, now=utcnow(), session_id=session_id)
    if out.get("changes"):
        out["changes"]["message"] = _changes_text(out["changes"], out["timezone"], future=True)
    return out


def _changes_text(changes: dict, tz_name: str, *, future: bool) -> str:
    """What an edit does (future) or did to the booked occurrences, in the reader's
    language and the series' zone."""
    tz = zone(tz_name)

    def fmt(t: dt.datetime) -> str:
        return f"{t.astimezone(tz):%Y-%m-%d %H:%M}"

    parts = []
    dropped, moved = changes["dropped"], changes["moved"]
    if dropped:
        shown = _("、").join(fmt(t) for t in dropped[:5]) + ("…" if len(dropped) > 5 else "")
        parts.append(_("将删除 %(n)s 个已排场次（%(list)s）", n=len(dropped), list=shown)
                      if future else
                      _("已删除 %(n)s 个已排场次（%(list)s）", n=len(dropped), list=shown))
    if moved:
        shown = _("、").join(f"{fmt(m['from'])} → {fmt(m['to'])}" for m in moved[:3]) + (
            "…" if len(moved) > 3 else "")
        parts.append(_("将改期 %(n)s 个场次（%(list)s）", n=len(moved), list=shown) if future
                     else _("已改期 %(n)s 个场次（%(list)s）", n=len(moved), list=shown))
    if changes["added"]:
        parts.append(_("将新增 %(n)s 个场次", n=changes["added"]) if future
                     else _("已新增 %(n)s 个场次", n=changes["added"]))
    return _("；").join(parts)


@blp.route("/sessions/import", methods=["POST"])
@blp.arguments(ImportFiles, location="files")
@blp.arguments(ImportForm, location="form")
@blp.response(201, ImportOut)
@blp.alt_response(200, schema=ImportOut, description="dry_run: what an import would do")
@blp.alt_response(429, description="too many imports by this user within a minute")
@ratelimit.limit_imports
def import_sessions(files, form):
    """Import an .ics file (Outlook, Google, ...): multipart `file`, `site_ids`,
    `org_unit_ids` (repeated or comma separated) and optional `trainer_id`.

    Events whose UID an earlier import created sessions from update those sessions.
    `dry_run=true` answers 200 with what would be created, updated or left unchanged,
    and saves nothing."""
    actor = current_api_user("session.import")
    content = files["file"].read()
    studies, notes, changes = service.import_ics(
        db.session, actor, content, site_ids=form["site_ids"], org_unit_ids=form["org_unit_ids"],
        trainer_id=form.get("trainer_id"), now=utcnow(),
        max_events=settings().ics_max_events)
    if form.get("dry_run"):
        db.session.rollback()
        for change in changes:
            if change["action"] == "created":
                change["session_id"] = None
        return {"ids": [], "sessions": [], "notes": notes, "changes": changes,
                "dry_run": True}, 200
    db.session.commit()
    return {"ids": [s.id for s in studies], "sessions": studies, "notes": notes,
            "changes": changes, "dry_run": False}


def _visible_session(session_id: int) -> StudySession:
    study = service.get_session(db.session, session_id)
    service.require_view(db.session, current_principal(), study)
    return study


@blp.route("/sessions/<int:session_id>")
class SessionById(MethodView):
    @blp.response(200, SessionOut)
    def get(self, session_id: int):
        """One session."""
        return _visible_session(session_id)

    @blp.arguments(SessionPatch(partial=True))
    @blp.response(200, SessionOut)
    def patch(self, data, session_id: int):
        """Edit a series; past, moved, cancelled and attended occurrences are kept."""
        actor = current_api_user("session.create")
        study = service.get_session(db.session, session_id)
        service.update_session(db.session, actor, study, data, now=utcnow())
        db.session.commit()
        return study

    @blp.response(204)
    def delete(self, session_id: int):
        """Delete a session (refused once it has attendance)."""
        actor = current_api_user("session.create")
        study = service.get_session(db.session, session_id)
        service.delete_session(db.session, actor, study, now=utcnow())
        db.session.commit()


def _with_session(query):
    return query.options(contains_eager(Occurrence.session))


@blp.route("/sessions/<int:session_id>/occurrences")
@blp.arguments(RangeQuery, location="query")
@blp.response(200, OccurrenceOut(many=True))
def session_occurrences(args, session_id: int):
    """Every occurrence of a session in [from, to), cancelled ones included."""
    study = _visible_session(session_id)
    start, end = _range(args)
    query = (select(Occurrence).join(StudySession).where(Occurrence.session_id == study.id)
             .order_by(Occurrence.starts_at, Occurrence.id))
    if start is not None:
        query = query.where(Occurrence.ends_at > start)
    if end is not None:
        query = query.where(Occurrence.starts_at < end)
    return db.session.scalars(_with_session(query)).all()


@blp.route("/sessions/<int:session_id>/ics")
@blp.response(200, content_type="text/calendar")
def session_ics(session_id: int):
    """The session as an .ics file."""
    study = _visible_session(session_id)
    return _ics_response(service.session_ics(study), f"session-{study.id}.ics")


def _ics_response(body: bytes, filename: str) -> Response:
    response = Response(body, content_type="text/calendar; charset=utf-8")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


class OccurrenceRowPage(SelectPage):
    """A page of occurrence rows as plain tuples with the session's title and zone.

    Long lists (a year of a whole committee) skip the ORM identity map: loading entities
    costs several times more than the rows themselves.
    """

    @property
    def items(self):
        query = self.collection.with_only_columns(
            Occurrence.id, Occurrence.session_id, StudySession.title, StudySession.timezone,
            Occurrence.starts_at, Occurrence.ends_at, Occurrence.original_start,
            Occurrence.status, Occurrence.overridden, Occurrence.sequence)
        # Plain dicts: marshmallow reads a mapping by key at once, a Row only after a miss.
        return [dict(row) for row in db.session.execute(
            query.limit(self.page_params.page_size).offset(self.page_params.first_item)
        ).mappings()]


@blp.route("/occurrences")
@blp.arguments(OccurrenceQuery, location="query")
@blp.response(200, OccurrenceOut(many=True))
@blp.paginate(OccurrenceRowPage, page_size=50, max_page_size=10000)
def occurrences(args):
    """Occurrences the caller may see in [from, to), by site, org unit or session."""
    principal = current_principal()
    start, end = _range(args)
    query = service.occurrences_query(
        db.session, principal, start=start, end=end, site_id=args.get("site_id"),
        org_unit_id=args.get("org_unit_id"), session_id=args.get("session_id"))
    if args.get("status"):
        query = query.where(Occurrence.status == args["status"])
    return query


def _visible_occurrence(occurrence_id: int) -> Occurrence:
    occ = service.get_occurrence(db.session, occurrence_id)
    service.require_view(db.session, current_principal(), occ.session)
    return occ


@blp.route("/occurrences/<int:occurrence_id>")
class OccurrenceById(MethodView):
    @blp.response(200, OccurrenceOut)
    def get(self, occurrence_id: int):
        """One occurrence."""
        return _visible_occurrence(occurrence_id)

    @blp.arguments(OccurrencePatch)
    @blp.response(200, OccurrenceOut)
    def patch(self, data, occurrence_id: int):
        """Move (`starts_at`) and/or cancel or restore (`status`) one occurrence."""
        actor = current_api_user("session.create")
        occ = service.get_occurrence(db.session, occurrence_id)
        service.update_occurrence(db.session, actor, occ, starts_at=data.get("starts_at"),
                                  status=data.get("status"), now=utcnow())
        db.session.commit()
        return occ


# --- calendar feed URLs -------------------------------------------------------------------------

FEED_PATHS = {"sites": "site", "members": "member", "users": "trainer", "org-units": "org_unit"}


def feed_url(token: str) -> str:
    return url_for("sessions.feed", token=token, _external=True)


@blp.route("/<any(sites, members, users, 'org-units'):owner>/<int:owner_id>/calendar-url")
@blp.response(200, FeedUrlOut)
def calendar_url(owner: str, owner_id: int):
    """The tokenized subscription URL of a site's, member's, trainer's or org unit's calendar."""
    kind = FEED_PATHS[owner]
    service.require_feed_access(db.session, current_principal(), kind, owner_id)
    token = service.feed_token(db.session, kind, owner_id, secret=_secret())
    db.session.commit()
    return {"url": feed_url(token)}


@blp.route("/<any(sites, members, users, 'org-units'):owner>/<int:owner_id>/calendar-url/revoke",
           methods=["POST"])
@blp.response(200, FeedUrlOut)
def revoke_calendar_url(owner: str, owner_id: int):
    """A new subscription URL; every older one stops working."""
    kind = FEED_PATHS[owner]
    principal = current_principal()
    if isinstance(principal, SiteScreen):
        raise Forbidden("学习点屏幕令牌不能重置订阅地址")
    service.require_feed_access(db.session, principal, kind, owner_id, revoke=True)
    token = service.revoke_feed(db.session, kind, owner_id, secret=_secret())
    db.session.commit()
    return {"url": feed_url(token)}


# --- the feed itself (no login: the signed token is the credential) ---------------------------


@pages.route("/feeds/<token>.ics")
def feed(token: str):
    """A subscription feed; ETag/If-None-Match answers 304 while nothing changed."""
    try:
        row = service.resolve_feed(db.session, token, secret=_secret())
    except DomainError:
        abort(404)
    etag, changed = service.feed_validators(db.session, row)
    headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=300"}
    if changed is not None:
        headers["Last-Modified"] = http_date(changed.replace(microsecond=0))
    # RFC 9110 13.2.2: If-None-Match decides when present; else If-Modified-Since.
    if request.if_none_match:
        if request.if_none_match.contains_weak(etag):
            return Response(status=304, headers=headers)
    elif (since := request.if_modified_since) is not None and changed is not None \
            and changed.replace(microsecond=0) <= since:
        return Response(status=304, headers=headers)
    body = service.feed_body(db.session, row, etag)
    response = _ics_response(body, f"{row.owner_kind}-{row.owner_id}.ics")
    response.headers.update(headers)
    return response


# --- pages -------------------------------------------------------------------------------


def _viewer_tz() -> str:
    """The zone a user reads times in: his site's, his member's home site's, else Shanghai."""
    user = current_user
    site = getattr(user, "site", None)
    if site is None and getattr(user, "member", None) is not None:
        site = user.member.home_site
    return site.timezone if site is not None else settings().default_timezone


def _links(occ: Occurrence) -> list[dict]:
    """What the current user can do with an occurrence: label, url and whether it is the
    role's primary action (one per row; the rest go in a menu)."""
    study = occ.session
    offers = service.occurrence_links(current_user, study)
    links = [{"label": _("详情"), "url": url_for("sessions.detail", session_id=study.id)}]
    if offers["broadcast"]:
        links.append({"label": _("开始直播"), "url": f"/live/{occ.id}/broadcast",
                      "primary": offers["broadcast_primary"]})
    site_id = offers["room_site_id"]
    if site_id:
        links.append({"label": _("学习点屏幕"), "url": f"/live/{occ.id}/site/{site_id}",
                      "primary": True})
        # The room's two pages side by side: the big screen, and the roll call on his phone.
        links.append({"label": _("点名"),
                      "url": f"/live/{occ.id}/site/{site_id}/roll-call", "beside": True})
        # The operator's own record of the lesson: the printable sign-in sheet.
        links.append({"label": _("签到表"), "url": f"/attendance/{occ.id}/sign-in-sheet"})
    elif offers["site_screens"]:
        for site in study.sites:
            links.append({"label": _("学习点屏幕") + f"·{site.name}",
                          "url": f"/live/{occ.id}/site/{site.id}"})
    if offers["attendance"]:
        links.append({"label": _("考勤"), "url": f"/attendance/{occ.id}",
                      "primary": offers["attendance_primary"]})
    if offers["watch"]:
        links.append({"label": _("观看"), "url": f"/live/{occ.id}/watch",
                      "primary": offers["watch_primary"]})
    first = next((link for link in links if link.get("primary")), None)
    for link in links:
        link["primary"] = link is first
    return links


def _headcount_url(occ: Occurrence) -> str | None:
    """Where 工作台 reads a lesson's live headcount (roles that see attendance)."""
    if policy.can(current_user, "attendance.headcount"):
        return url_for("attendance_pages.headcount_json", occurrence_id=occ.id)
    return None


def _occurrences_between(start: dt.datetime, end: dt.datetime) -> list[Occurrence]:
    query = service.occurrences_query(db.session, current_user, start=start, end=end)
    return list(db.session.scalars(_with_session(query)))


@pages.route("/")
@login_required
def dashboard():
    """Today's occurrences and those of the next seven days, in the user's scope."""
    tz_name = _viewer_tz()
    tz = zone(tz_name)
    now = utcnow()
    today = now.astimezone(tz).date()
    day_start = dt.datetime.combine(today, dt.time(), tz)
    rows = _occurrences_between(day_start, day_start + dt.timedelta(days=8))
    tomorrow = day_start + dt.timedelta(days=1)
    today_rows = [o for o in rows if o.starts_at < tomorrow]
    upcoming = [o for o in rows if o.starts_at >= tomorrow]
    return render_template("sessions/dashboard.html", today=today_rows, upcoming=upcoming,
                           tz=tz, tz_name=tz_name, links=_links, now=now,
                           headcount_url=_headcount_url)


@pages.route("/sessions")
@login_required
def index():
    """Sessions the user may see."""
    if not policy.can(current_user, "session.list"):
        return redirect(url_for("sessions.calendar"))
    page = max(request.args.get("page", 1, type=int), 1)
    query = service.sessions_query(db.session, current_user, q=request.args.get("q") or None,
                                   kind=request.args.get("kind") or None)
    rows = db.session.scalars(query.limit(51).offset((page - 1) * 50)).all()
    return render_template("sessions/index.html", sessions=rows[:50], has_more=len(rows) > 50,
                           page=page, kinds=SESSION_KINDS,
                           can_create=policy.can(current_user, "session.create"))


def _form_page(study: StudySession | None):
    """The session form: GET shows it, POST validates on the server and saves."""
    if not policy.can(current_user, "session.create"):
        abort(403)
    if study is not None:
        service.require_edit(db.session, current_user, study)
    choices = service.form_choices(db.session, current_user)
    errors: dict[str, str] = {}
    values = (schemas.form_values_from_session(study) if study
              else schemas.default_form_values(utcnow()))
    if request.method == "POST":
        values = schemas.form_values_from_request(request.form)
        try:
            data = schemas.form_to_service_data(values)
            now = utcnow()
            changes = None
            if study is None:
                study = service.create_session(db.session, current_user, data, now=now)
            else:
                before = service.upcoming_starts(study, now)
                service.update_session(db.session, current_user, study, data, now=now)
                db.session.flush()
                changes = service.occurrence_changes(
                    before, service.upcoming_starts(study, now))
            db.session.commit()
            status = 200
        except schemas.FormError as exc:
            errors[exc.field] = str(exc.message)
            status = 422
        except DomainError as exc:
            field = exc.details.get("field") or "form"
            errors[schemas.FORM_FIELD.get(field, field)] = exc.message
            errors.setdefault("form", exc.message)
            status = exc.status if exc.status in (403, 409) else 422
        if errors:
            db.session.rollback()
            study = db.session.get(StudySession, study.id) if study and study.id else None
            return render_template("sessions/form.html", values=values, errors=errors,
                                   study=study, choices=choices, kinds=SESSION_KINDS), status
        assert study is not None  # saved above, or an error returned
        flash(_("已保存"), "ok")
        message = _changes_text(changes, study.timezone, future=False) if changes else ""
        if message:
            flash(message, "warn")
        return redirect(url_for("sessions.detail", session_id=study.id))
    return render_template("sessions/form.html", values=values, errors=errors, study=study,
                           choices=choices, kinds=SESSION_KINDS)


@pages.route("/sessions/new", methods=["GET", "POST"])
@login_required
def new():
    return _form_page(None)


@pages.route("/sessions/<int:session_id>/edit", methods=["GET", "POST"])
@login_required
def edit(session_id: int):
    return _form_page(service.get_session(db.session, session_id))


@pages.route("/sessions/<int:session_id>")
@login_required
def detail(session_id: int):
    """A session with its occurrences (move and cancel buttons for those who may edit)."""
    study = service.get_session(db.session, session_id)
    service.require_view(db.session, current_user, study)
    now = utcnow()
    rows = sorted(study.occurrences, key=lambda o: o.starts_at)
    per_page = 20
    pages = max(1, -(-len(rows) // per_page))
    default = next((i for i, o in enumerate(rows) if o.ends_at > now), len(rows) - 1)
    page = request.args.get("page", type=int) or default // per_page + 1
    page = min(max(page, 1), pages)
    return render_template("sessions/detail.html", study=study, tz=zone(study.timezone),
                           occurrences=rows[(page - 1) * per_page:page * per_page],
                           total=len(rows), page=page, pages=pages, now=now,
                           can_edit=service.can_edit_session(db.session, current_user, study),
                           links=_links)


@pages.route("/sessions/<int:session_id>.ics")
@login_required
def detail_ics(session_id: int):
    study = service.get_session(db.session, session_id)
    service.require_view(db.session, current_user, study)
    response = _ics_response(service.session_ics(study), f"session-{study.id}.ics")
    response.headers["Content-Disposition"] = f'attachment; filename="session-{study.id}.ics"'
    return response


@pages.route("/sessions/import", methods=["GET"])
@login_required
def import_page():
    if not policy.can(current_user, "session.import"):
        abort(403)
    return render_template("sessions/import.html",
                           choices=service.form_choices(db.session, current_user))


@pages.route("/calendar")
@login_required
def calendar():
    """Week (default) or month view, in the viewer's zone, with prev/next navigation."""
    tz_name = request.args.get("tz") or _viewer_tz()
    tz = zone(tz_name)
    view = "month" if request.args.get("view") == "month" else "week"
    try:
        anchor = dt.date.fromisoformat(request.args["date"]) if request.args.get("date") \
            else utcnow().astimezone(tz).date()
    except ValueError:
        anchor = utcnow().astimezone(tz).date()
    if not in_window(anchor):  # year 1 or 9999: no grid around it (the page said 500)
        flash(_("日期必须在 %(lo)s 年到 %(hi)s 年之间", lo=MIN_YEAR, hi=MAX_YEAR), "error")
        anchor = utcnow().astimezone(tz).date()
    grid = calendar_grid(view, anchor)
    start = dt.datetime.combine(grid["days"][0], dt.time(), tz)
    end = dt.datetime.combine(grid["days"][-1] + dt.timedelta(days=1), dt.time(), tz)
    by_day: dict[dt.date, list[Occurrence]] = {}
    for occ in _occurrences_between(start, end):
        by_day.setdefault(occ.starts_at.astimezone(tz).date(), []).append(occ)
    return render_template("sessions/calendar.html", view=view, grid=grid, by_day=by_day,
                           tz=tz, tz_name=tz_name, anchor=anchor,
                           today=utcnow().astimezone(tz).date())


@pages.route("/feeds")
@login_required
def feeds():
    """Subscription links for the calendars the user may see, with copy buttons."""
    links = []
    for kind, owner_id, label in service.feed_owners(db.session, current_user):
        try:
            service.require_feed_access(db.session, current_user, kind, owner_id)
        except DomainError:
            continue
        token = service.feed_token(db.session, kind, owner_id, secret=_secret())
        path = {"site": "sites", "member": "members", "trainer": "users",
                "org_unit": "org-units"}[kind]
        try:  # a member reads his site's and unit's shared calendars, resets none
            service.require_feed_access(db.session, current_user, kind, owner_id, revoke=True)
            revoke = f"/api/v1/{path}/{owner_id}/calendar-url/revoke"
        except DomainError:
            revoke = None
        links.append({"kind": kind, "id": owner_id, "label": label, "url": feed_url(token),
                      "revoke": revoke,
                      "key": hashlib.sha1(f"{kind}{owner_id}".encode()).hexdigest()[:8]})
    db.session.commit()
    return render_template("feeds/index.html", links=links)


def calendar_grid(view: str, anchor: dt.date) -> dict:
    """Days shown by a week (Monday first) or month view, and the prev/next anchors."""
    if view == "month":
        first = anchor.replace(day=1)
        start = first - dt.timedelta(days=first.weekday())
        next_month = (first + dt.timedelta(days=32)).replace(day=1)
        end = next_month + dt.timedelta(days=(7 - next_month.weekday()) % 7)
        prev = (first - dt.timedelta(days=1)).replace(day=1)
        days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        return {"days": days, "weeks": [days[i:i + 7] for i in range(0, len(days), 7)],
                "prev": prev, "next": next_month, "month": first.month, "title": first}
    start = anchor - dt.timedelta(days=anchor.weekday())
    days = [start + dt.timedelta(days=i) for i in range(7)]
    return {"days": days, "weeks": [days], "prev": start - dt.timedelta(days=7),
            "next": start + dt.timedelta(days=7), "month": None, "title": start}
