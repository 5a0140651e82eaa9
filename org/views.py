"""Org units, sites and members: the JSON API under /api/v1 and the management pages.

Views are thin: read input, call one service function, commit once, answer. Scope and
role are checked by org.service (through accounts.service) on every call.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import time
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.views import MethodView
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_smorest import Blueprint as ApiBlueprint
from sqlalchemy import func, select

from accounts import service as accounts_service
from accounts import throttle as login_throttle
from accounts.models import ROLES
from core import policy, ratelimit
from core.api import api, current_api_user, current_principal
from core.errors import DomainError, Forbidden, ValidationError
from core.pagination import SelectPage
from core.timeutil import DEFAULT_TZ
from core.types import utcnow
from extensions import csrf, db
from org import service
from org.models import MEMBER_CATEGORIES, MEMBER_STATUSES, ORG_UNIT_KINDS, Member, OrgUnit, Site
from org.schemas import (
    MemberImportFile,
    MemberImportForm,
    MemberImportReport,
    MemberIn,
    MemberOut,
    MemberPatch,
    MemberQuery,
    OrgUnitIn,
    OrgUnitOut,
    OrgUnitPatch,
    OrgUnitQuery,
    ScreenTokenOut,
    ScreenTokensRenewed,
    ScreenTokensRevoked,
    SiteIn,
    SiteOut,
    SitePatch,
    SiteQuery,
)

log = logging.getLogger(__name__)

blp = ApiBlueprint("org_api", __name__, url_prefix="/api/v1",
                   description="组织、学习点与党员名册")
pages = Blueprint("org", __name__)

#: Where a meeting-room screen uses its token (the video domain's kiosk page).
#: The standing address of a room screen: it opens whatever lecture runs at the site.
SCREEN_URL = "/screen/{site_id}?token={token}"


@blp.before_request
def _authenticate() -> None:
    """Every org endpoint needs a caller: answer 401 before validating the body."""
    current_principal()


def init_app(app: Flask) -> None:
    """Register the org API (CSRF-exempt: it authenticates by bearer token) and pages."""
    api.register_blueprint(blp)
    csrf.exempt(blp)
    app.register_blueprint(pages)


# === API: org units ====================================================================


@blp.route("/org-units")
class OrgUnits(MethodView):
    @blp.arguments(OrgUnitQuery, location="query")
    @blp.response(200, OrgUnitOut(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self, args):
        """Org units the caller may read (admin and trainer: all; organizer: his subtree)."""
        return service.org_units_query(db.session, current_api_user(), **args)

    @blp.arguments(OrgUnitIn)
    @blp.response(201, OrgUnitOut)
    def post(self, data):
        """Create an org unit under `parent_id` (organizers: inside their subtree)."""
        unit = service.create_org_unit(db.session, current_api_user(), **data)
        db.session.commit()
        return unit


@blp.route("/org-units/<int:org_unit_id>")
class OrgUnitById(MethodView):
    @blp.response(200, OrgUnitOut)
    def get(self, org_unit_id: int):
        return service.get_org_unit(db.session, current_api_user(), org_unit_id)

    @blp.arguments(OrgUnitPatch)
    @blp.response(200, OrgUnitOut)
    def patch(self, data, org_unit_id: int):
        """Rename, change the kind, or move (`parent_id`) a unit with its subtree."""
        unit = service.update_org_unit(db.session, current_api_user(), org_unit_id, **data)
        db.session.commit()
        return unit

    @blp.response(204)
    def delete(self, org_unit_id: int):
        """Delete an empty unit (no children, sites, members or users): else 409."""
        service.delete_org_unit(db.session, current_api_user(), org_unit_id)
        db.session.commit()


# === API: sites ========================================================================


@blp.route("/sites")
class Sites(MethodView):
    @blp.arguments(SiteQuery, location="query")
    @blp.response(200, SiteOut(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self, args):
        """Sites the caller may read; `org_unit_id` includes the unit's subtree."""
        return service.sites_query(db.session, current_api_user(), **args)

    @blp.arguments(SiteIn)
    @blp.response(201, SiteOut)
    def post(self, data):
        """Create a meeting room (time zone defaults to Asia/Shanghai)."""
        site = service.create_site(db.session, current_api_user(), **data)
        db.session.commit()
        return site


@blp.route("/sites/<int:site_id>")
class SiteById(MethodView):
    @blp.response(200, SiteOut)
    def get(self, site_id: int):
        return service.get_site(db.session, current_api_user(), site_id)

    @blp.arguments(SitePatch)
    @blp.response(200, SiteOut)
    def patch(self, data, site_id: int):
        site = service.update_site(db.session, current_api_user(), site_id, **data)
        db.session.commit()
        return site

    @blp.response(200, SiteOut)
    def delete(self, site_id: int):
        """Deactivate the site (kept for history) and revoke its screen tokens."""
        site = service.deactivate_site(db.session, current_api_user(), site_id)
        db.session.commit()
        return site


def screen_url_hint(site_id: int, token: str) -> str:
    return request.host_url.rstrip("/") + SCREEN_URL.format(site_id=site_id, token=token)


@blp.route("/sites/<int:site_id>/screen-tokens")
class ScreenTokens(MethodView):
    @blp.response(201, ScreenTokenOut)
    def post(self, site_id: int):
        """A bearer token for a meeting-room screen of this site (shown once)."""
        days = _screen_token_days()
        site, token = service.issue_screen_token(db.session, current_api_user(), site_id,
                                                 days=days)
        db.session.commit()
        return {"token": token, "site_id": site.id,
                "screen_url_hint": screen_url_hint(site.id, token),
                "expires_at": utcnow() + dt.timedelta(days=days)}

    @blp.response(200, ScreenTokensRevoked)
    def delete(self, site_id: int):
        """Revoke every screen token of this site (a lost or replaced screen)."""
        count = service.revoke_screen_tokens(db.session, current_api_user(), site_id)
        db.session.commit()
        return {"revoked": count}


@blp.route("/sites/<int:site_id>/screen-tokens/renew", methods=["POST"])
@blp.response(200, ScreenTokensRenewed)
def renew_screen_tokens(site_id: int):
    """Renew every unrevoked screen token of this site for YUANJIAO_SCREEN_TOKEN_DAYS from
    now; an expired screen works again at the same address."""
    days = _screen_token_days()
    count = service.renew_screen_tokens(db.session, current_api_user(), site_id, days=days)
    db.session.commit()
    return {"renewed": count, "expires_at": utcnow() + dt.timedelta(days=days)}


def _screen_token_days() -> int:
    return int(current_app.config["YUANJIAO_SCREEN_TOKEN_DAYS"])


# === API: members ======================================================================


@blp.route("/members")
class Members(MethodView):
    @blp.arguments(MemberQuery, location="query")
    @blp.response(200, MemberOut(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self, args):
        """Members the caller may read, filtered (org_unit_id includes the subtree)."""
        return service.members_query(db.session, current_api_user(), **args)

    @blp.arguments(MemberIn)
    @blp.response(201, MemberOut)
    def post(self, data):
        """Add a member; a member number already on the roster is a 409."""
        member = service.create_member(db.session, current_api_user(), **data)
        db.session.commit()
        return member


@blp.route("/members/<int:member_id>")
class MemberById(MethodView):
    @blp.response(200, MemberOut)
    def get(self, member_id: int):
        return service.get_member(db.session, current_api_user(), member_id)

    @blp.arguments(MemberPatch)
    @blp.response(200, MemberOut)
    def patch(self, data, member_id: int):
        """Change a member; `{"status": "transferred"}` transfers him out (kept for history)."""
        member = service.update_member(db.session, current_api_user(), member_id, **data)
        db.session.commit()
        return member


@blp.route("/members/import", methods=["POST"])
@blp.arguments(MemberImportForm, location="form")
@blp.arguments(MemberImportFile, location="files")
@blp.response(201, MemberImportReport)
@blp.alt_response(200, schema=MemberImportReport, description="the dry run's report")
@blp.alt_response(422, description="refused file: details.rows names each bad row")
@blp.alt_response(429, description="too many imports by this user within a minute")
@ratelimit.limit_imports
def import_members(form, files):
    """Import members from xlsx or csv; all rows or none. `dry_run` changes nothing."""
    upload = files["file"]
    actor = current_api_user()
    report = service.import_members(db.session, upload.filename or "", upload.read(),
                                    dry_run=form["dry_run"], actor=actor)
    if form["dry_run"]:
        db.session.rollback()
        return report, 200
    db.session.commit()
    return report, 201


# === pages =============================================================================

KIND_LABELS = {"committee": _l("党委"), "general_branch": _l("党总支"), "branch": _l("党支部"),
               "group": _l("党小组")}
CATEGORY_LABELS = {"full": _l("正式党员"), "probationary": _l("预备党员"),
                   "activist": _l("入党积极分子"), "mobile": _l("流动党员")}
STATUS_LABELS = {"active": _l("在册"), "transferred": _l("已转出")}
ROLE_LABELS = {"admin": _l("系统管理员"), "organizer": _l("组织管理员"), "trainer": _l("主讲人"),
               "site_operator": _l("学习点管理员"), "member": _l("党员")}
PAGE_SIZE = 50


@pages.context_processor
def _labels() -> dict[str, Any]:
    return {"kind_labels": KIND_LABELS, "category_labels": CATEGORY_LABELS,
            "status_labels": STATUS_LABELS, "role_labels": ROLE_LABELS,
            "org_kinds": ORG_UNIT_KINDS, "member_categories": MEMBER_CATEGORIES,
            "member_statuses": MEMBER_STATUSES}


def _page_user(action: str | None = None):
    """The logged-in user, if he may open this page, `can(action)` (else a 403 page)."""
    user = current_user._get_current_object()
    if action is not None and not policy.can(user, action):
        raise Forbidden(_("当前角色无权访问此页面"))
    return user


def _form_int(name: str, *, required: bool = False) -> int | None:
    """An integer form or query field; bad input is a message naming the field."""
    raw = (request.values.get(name) or "").strip()
    if not raw:
        if required:
            raise ValidationError(_("请填写：%(field)s", field=name), field=name)
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(_("%(field)s 必须是整数", field=name), field=name) from None


def _attempt(action, success: str) -> bool:
    """Run a change and commit; a refused change is rolled back and flashed, not a 500.

    Forbidden propagates: a page that is out of the user's scope answers 403.
    """
    try:
        action()
        db.session.commit()
    except Forbidden:
        db.session.rollback()
        raise
    except DomainError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return False
    flash(success, "ok")
    return True


def _back(default: str):
    target = request.form.get("next") or ""
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect(default)


def _unit_choices(user) -> list[dict[str, Any]]:
    """Units the user may manage, in tree order with depth, for select boxes."""
    nodes = service.flatten_tree(service.org_tree(db.session, user))
    managed = service.accounts.managed_org_unit_ids(db.session, user)
    return [n for n in nodes if managed is None or n["unit"].id in managed]


def _site_choices(user) -> list[Site]:
    return list(db.session.scalars(service.sites_query(db.session, user, active=True)
                                   .order_by(None).order_by(Site.name)))


# --- org tree ----------------------------------------------------------------------------


@pages.route("/org")
@login_required
def tree():
    """The org tree, with forms to create, rename, move and delete units."""
    user = _page_user("org.tree")
    nodes = service.flatten_tree(service.org_tree(db.session, user))
    ids = [n["unit"].id for n in nodes]
    site_counts = dict(db.session.execute(
        select(Site.org_unit_id, func.count()).where(Site.org_unit_id.in_(ids))
        .group_by(Site.org_unit_id)).all()) if ids else {}
    member_counts = dict(db.session.execute(
        select(Member.org_unit_id, func.count())
        .where(Member.org_unit_id.in_(ids), Member.status == "active")
        .group_by(Member.org_unit_id)).all()) if ids else {}
    managed = service.accounts.managed_org_unit_ids(db.session, user)
    can_write = policy.can(user, "org.write")
    return render_template(
        "org/tree.html", nodes=nodes, site_counts=site_counts, member_counts=member_counts,
        can_write=can_write, managed=managed,
        parents=_unit_choices(user) if can_write else [],
    )


@pages.route("/org/units", methods=["POST"])
@login_required
def unit_create():
    user = _page_user("org.write")
    _attempt(lambda: service.create_org_unit(
        db.session, user, name=request.form.get("name", ""),
        kind=request.form.get("kind", ""), parent_id=_form_int("parent_id")),
        _("组织已创建"))
    return redirect(url_for("org.tree"))


@pages.route("/org/units/<int:org_unit_id>", methods=["POST"])
@login_required
def unit_update(org_unit_id: int):
    """Rename, change kind, or move a unit (the fields the form sends)."""
    user = _page_user("org.write")

    def change() -> None:
        data: dict[str, Any] = {}
        if "name" in request.form:
            data["name"] = request.form["name"]
        if "kind" in request.form:
            data["kind"] = request.form["kind"]
        if "parent_id" in request.form:
            data["parent_id"] = _form_int("parent_id")
        service.update_org_unit(db.session, user, org_unit_id, **data)

    _attempt(change, _("组织已保存"))
    return redirect(url_for("org.tree"))


@pages.route("/org/units/<int:org_unit_id>/delete", methods=["POST"])
@login_required
def unit_delete(org_unit_id: int):
    user = _page_user("org.write")
    _attempt(lambda: service.delete_org_unit(db.session, user, org_unit_id), _("组织已删除"))
    return redirect(url_for("org.tree"))


# --- sites -------------------------------------------------------------------------------


@pages.route("/org/sites")
@login_required
def sites():
    """Sites in the user's scope, with a create form for those who manage units."""
    user = _page_user("site.pages")
    show_inactive = request.args.get("all") == "1"
    query = service.sites_query(db.session, user, active=None if show_inactive else True)
    rows = list(db.session.scalars(query))
    units = {u.id: u for u in db.session.scalars(
        select(OrgUnit).where(OrgUnit.id.in_({s.org_unit_id for s in rows})))} if rows else {}
    member_counts = dict(db.session.execute(
        select(Member.home_site_id, func.count())
        .where(Member.home_site_id.in_([s.id for s in rows]), Member.status == "active")
        .group_by(Member.home_site_id)).all()) if rows else {}
    can_write = policy.can(user, "org.write")
    operable = {s.id for s in rows if service.accounts.can_operate_site(db.session, user, s)}
    return render_template(
        "org/sites.html", sites=rows, units=units, member_counts=member_counts,
        can_write=can_write, operable=operable, show_inactive=show_inactive,
        unit_choices=_unit_choices(user) if can_write else [],
    )


def _site_form() -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": request.form.get("name", ""),
        "org_unit_id": _form_int("org_unit_id", required=True),
        "timezone": request.form.get("timezone", "") or DEFAULT_TZ,
        "location": request.form.get("location", ""),
        "capacity": _form_int("capacity"),
        "checkin_networks": request.form.get("checkin_networks", ""),
        "checkin_code_required": request.form.get("checkin_code_required") == "1",
    }
    return data


@pages.route("/org/sites", methods=["POST"])
@login_required
def site_create():
    user = _page_user("org.write")
    _attempt(lambda: service.create_site(db.session, user, **_site_form()), _("学习点已创建"))
    return redirect(url_for("org.sites"))


@pages.route("/org/sites/<int:site_id>", methods=["GET", "POST"])
@login_required
def site_edit(site_id: int):
    """Edit a site; also where screen tokens are issued and revoked."""
    user = _page_user("site.pages")
    site = service.get_site(db.session, user, site_id)
    can_write = policy.can(user, "org.write") and \
        service.accounts.can_manage_org_unit(db.session, user, site.org_unit_id)
    if request.method == "POST":
        if not can_write:
            raise Forbidden(_("无权修改该学习点"))

        def change() -> None:
            data = _site_form()
            data["active"] = request.form.get("active") == "1"
            service.update_site(db.session, user, site_id, **data)

        if _attempt(change, _("学习点已保存")):
            return redirect(url_for("org.sites"))
    return render_template(
        "org/site_edit.html", site=site, can_write=can_write,
        can_operate=service.accounts.can_operate_site(db.session, user, site),
        unit_choices=_unit_choices(user) if can_write else [],
        **_screen_tokens(site.id), token=None,
    )


def _screen_tokens(site_id: int) -> dict[str, Any]:
    """The site's unrevoked screen tokens for its page: how many are live, which expired,
    and when the first live one expires."""
    now = utcnow()
    rows = accounts_service.site_tokens(db.session, site_id)
    live = [r for r in rows if r.expires_at is None or r.expires_at > now]
    expiries = [r.expires_at for r in live if r.expires_at is not None]
    return {"live_tokens": len(live), "expired_tokens": len(rows) - len(live),
            "tokens_expire_at": min(expiries) if expiries else None}


@pages.route("/org/sites/<int:site_id>/screen-token", methods=["POST"])
@login_required
def site_screen_token(site_id: int):
    """Issue a screen token and show it once, with the screen link to copy."""
    user = _page_user("site.operate")
    site, token = service.issue_screen_token(db.session, user, site_id,
                                             days=_screen_token_days())
    db.session.commit()
    can_write = policy.can(user, "org.write") and \
        service.accounts.can_manage_org_unit(db.session, user, site.org_unit_id)
    return render_template(
        "org/site_edit.html", site=site, can_write=can_write, can_operate=True,
        unit_choices=_unit_choices(user) if can_write else [],
        **_screen_tokens(site.id), token=token,
        screen_url=screen_url_hint(site.id, token),
    )


@pages.route("/org/sites/<int:site_id>/screen-tokens/revoke", methods=["POST"])
@login_required
def site_screen_revoke(site_id: int):
    user = _page_user("site.operate")
    count = service.revoke_screen_tokens(db.session, user, site_id)
    db.session.commit()
    flash(_("已吊销 %(n)s 个屏幕令牌", n=count), "ok")
    return redirect(url_for("org.site_edit", site_id=site_id))


@pages.route("/org/sites/<int:site_id>/screen-tokens/renew", methods=["POST"])
@login_required
def site_screen_renew(site_id: int):
    """Renew the site's screen tokens: the screens keep their address another term."""
    user = _page_user("site.operate")
    count = service.renew_screen_tokens(db.session, user, site_id, days=_screen_token_days())
    db.session.commit()
    flash(_("已续期 %(n)s 个屏幕令牌", n=count), "ok")
    return redirect(url_for("org.site_edit", site_id=site_id))


@pages.route("/org/sites/<int:site_id>/deactivate", methods=["POST"])
@login_required
def site_deactivate(site_id: int):
    user = _page_user("org.write")
    _attempt(lambda: service.deactivate_site(db.session, user, site_id), _("学习点已停用"))
    return redirect(url_for("org.sites"))


# --- members -----------------------------------------------------------------------------


def _member_filters() -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in ("org_unit_id", "site_id"):
        try:
            value = _form_int(name)
        except ValidationError:
            value = None
        if value is not None:
            filters[name] = value
    if request.args.get("category") in MEMBER_CATEGORIES:
        filters["category"] = request.args["category"]
    status = request.args.get("status", "active")
    if status in MEMBER_STATUSES:
        filters["status"] = status
    if request.args.get("q", "").strip():
        filters["q"] = request.args["q"].strip()[:100]
    return filters


@pages.route("/org/members")
@login_required
def members():
    """The roster in the user's scope, filtered and searched, 50 to a page."""
    user = _page_user("member.pages")
    filters = _member_filters()
    query = service.members_query(db.session, user, **filters)
    total = db.session.scalar(select(func.count()).select_from(
        query.order_by(None).subquery())) or 0
    pages_count = max(1, math.ceil(total / PAGE_SIZE))
    try:
        page = min(max(1, int(request.args.get("page", "1"))), pages_count)
    except ValueError:
        page = 1
    rows = list(db.session.scalars(query.order_by(None).order_by(Member.member_no)
                                   .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
    units = {u.id: u for u in db.session.scalars(
        select(OrgUnit).where(OrgUnit.id.in_({m.org_unit_id for m in rows})))} if rows else {}
    site_rows = {s.id: s for s in db.session.scalars(
        select(Site).where(Site.id.in_({m.home_site_id for m in rows if m.home_site_id})))}
    can_write = policy.can(user, "org.write")
    return render_template(
        "org/members.html", members=rows, units=units, sites=site_rows, filters=filters,
        status_filter=request.args.get("status", "active"),
        total=total, page=page, pages_count=pages_count, can_write=can_write,
        unit_choices=_unit_choices(user) if policy.can(user, "org.write") else [],
        site_choices=_site_choices(user),
    )


def _member_form() -> dict[str, Any]:
    return {
        "name": request.form.get("name", ""),
        "member_no": request.form.get("member_no", ""),
        "org_unit_id": _form_int("org_unit_id", required=True),
        "home_site_id": _form_int("home_site_id"),
        "category": request.form.get("category", "full"),
        "phone": request.form.get("phone", ""),
    }


@pages.route("/org/members", methods=["POST"])
@login_required
def member_create():
    user = _page_user("org.write")
    _attempt(lambda: service.create_member(db.session, user, **_member_form()),
             _("党员已添加"))
    return _back(url_for("org.members"))


@pages.route("/org/members/<int:member_id>", methods=["GET", "POST"])
@login_required
def member_edit(member_id: int):
    user = _page_user("member.pages")
    member = service.get_member(db.session, user, member_id)
    can_write = policy.can(user, "org.write")
    if request.method == "POST":
        if not can_write:
            raise Forbidden(_("无权修改该党员"))

        def change() -> None:
            data = _member_form()
            if request.form.get("status") in MEMBER_STATUSES:
                data["status"] = request.form["status"]
            service.update_member(db.session, user, member_id, **data)

        if _attempt(change, _("党员信息已保存")):
            return redirect(url_for("org.members"))
    return render_template(
        "org/member_edit.html", member=member, can_write=can_write,
        unit_choices=_unit_choices(user) if can_write else [],
        site_choices=_site_choices(user),
    )


@pages.route("/org/members/<int:member_id>/transfer", methods=["POST"])
@login_required
def member_transfer(member_id: int):
    """Transfer a member out (转出): kept for history, no longer expected."""
    user = _page_user("org.write")
    _attempt(lambda: service.transfer_member(db.session, user, member_id), _("党员已转出"))
    return _back(url_for("org.members"))


# --- member import: upload -> dry-run preview -> confirm ---------------------------------

IMPORT_MAX_AGE = 3600


def _import_dir() -> Path:
    path = Path(current_app.instance_path) / "imports"
    path.mkdir(parents=True, exist_ok=True)
    # Abandoned previews are dropped after an hour.
    for old in path.glob("*.upload"):
        if time.time() - old.stat().st_mtime > IMPORT_MAX_AGE:
            old.unlink(missing_ok=True)
    return path


@pages.route("/org/members/import", methods=["GET", "POST"])
@login_required
@ratelimit.limit_imports
def member_import():
    """Upload a file and show the dry run; the file waits under instance/ for the confirm."""
    user = _page_user("org.write")
    if request.method == "GET":
        return render_template("org/import.html", report=None, errors=None)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash(_("请选择要导入的文件"), "error")
        return render_template("org/import.html", report=None, errors=None), 400
    content = upload.read()
    try:
        report = service.import_members(db.session, upload.filename, content, dry_run=True,
                                        actor=user)
    except Forbidden:
        raise
    except DomainError as exc:
        db.session.rollback()
        return render_template("org/import.html", report=None, errors=exc.details.get("rows"),
                               message=exc.message, filename=upload.filename), exc.status
    db.session.rollback()
    names = _change_names(report)
    ticket = secrets.token_hex(16)
    (_import_dir() / f"{ticket}.upload").write_bytes(content)
    session["org_import"] = {"ticket": ticket, "filename": upload.filename, "user": user.id}
    return render_template("org/import.html", report=report, errors=None, ticket=ticket,
                           names=names, field_labels=IMPORT_FIELD_LABELS)


IMPORT_FIELD_LABELS = {"name": _l("姓名"), "org_unit_id": _l("所在支部"),
                       "home_site_id": _l("学习点"), "category": _l("类别"), "phone": _l("手机")}


def _change_names(report: dict[str, Any]) -> dict[str, dict[Any, str]]:
    """Readable names for the ids and enum values in a dry run's changes."""
    unit_ids: set[int] = set()
    site_ids: set[int] = set()
    for row in report["rows"]:
        for field, change in row["changes"].items():
            target = unit_ids if field == "org_unit_id" else \
                site_ids if field == "home_site_id" else None
            if target is not None:
                target.update(v for v in (change["old"], change["new"]) if v is not None)
    units = dict(db.session.execute(select(OrgUnit.id, OrgUnit.name)
                                    .where(OrgUnit.id.in_(unit_ids))).all()) if unit_ids else {}
    sites = dict(db.session.execute(select(Site.id, Site.name)
                                    .where(Site.id.in_(site_ids))).all()) if site_ids else {}
    return {"org_unit_id": units, "home_site_id": sites,
            "category": {k: str(v) for k, v in CATEGORY_LABELS.items()}}


@pages.route("/org/members/import/confirm", methods=["POST"])
@login_required
def member_import_confirm():
    """Import the previewed file for real (validated again: the roster may have changed)."""
    user = _page_user("org.write")
    pending = session.get("org_import") or {}
    if pending.get("ticket") != request.form.get("ticket") or pending.get("user") != user.id:
        flash(_("导入预览已过期，请重新上传文件"), "error")
        return redirect(url_for("org.member_import"))
    path = _import_dir() / f"{pending['ticket']}.upload"
    if not path.exists():
        flash(_("导入预览已过期，请重新上传文件"), "error")
        return redirect(url_for("org.member_import"))
    try:
        report = service.import_members(db.session, pending["filename"], path.read_bytes(),
                                        dry_run=False, actor=user)
        db.session.commit()
    except Forbidden:
        db.session.rollback()
        raise
    except DomainError as exc:
        db.session.rollback()
        return render_template("org/import.html", report=None, errors=exc.details.get("rows"),
                               message=exc.message, filename=pending["filename"]), exc.status
    finally:
        path.unlink(missing_ok=True)
        session.pop("org_import", None)
    flash(_("导入完成：新增 %(c)s 人，更新 %(u)s 人，未变 %(n)s 人", c=report["created"],
            u=report["updated"], n=report["unchanged"]), "ok")
    return redirect(url_for("org.members"))


# --- users -------------------------------------------------------------------------------


@pages.route("/users", methods=["GET"])
@login_required
def users():
    """Users in scope; create users with the role's scope, deactivate, reset passwords."""
    user = _page_user("user.manage")
    query = accounts_service.users_query(db.session, user)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages_count = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(1, request.args.get("page", 1, type=int)), pages_count)
    rows = list(db.session.scalars(query.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
    return render_template(
        "users/list.html", users=rows, roles=accounts_service.creatable_roles(user),
        unit_choices=_unit_choices(user), site_choices=_site_choices(user),
        page=page, pages_count=pages_count, total=total,
        held=login_throttle.held_logins(rows),
    )


@pages.route("/users", methods=["POST"])
@login_required
def user_create():
    user = _page_user("user.manage")

    def create() -> None:
        role = request.form.get("role", "")
        data: dict[str, Any] = {
            "username": request.form.get("username", ""),
            "password": request.form.get("password", ""),
            "role": role,
            "display_name": request.form.get("display_name", ""),
        }
        if role == "organizer":
            data["org_unit_id"] = _form_int("org_unit_id", required=True)
        elif role == "site_operator":
            data["site_id"] = _form_int("site_id", required=True)
        elif role == "member":
            member_no = request.form.get("member_no", "").strip()
            member = db.session.scalar(select(Member).where(Member.member_no == member_no))
            if member is None:
                raise ValidationError(_("花名册中没有该党员编号：%(no)s", no=member_no),
                                      field="member_no")
            data["member_id"] = member.id
        elif role not in ROLES:
            raise ValidationError(_("请选择角色"), field="role")
        accounts_service.create_user_for(db.session, user, **data)

    _attempt(create, _("用户已创建"))
    return redirect(url_for("org.users"))


@pages.route("/users/<int:user_id>/active", methods=["POST"])
@login_required
def user_active(user_id: int):
    user = _page_user("user.manage")
    active = request.form.get("active") == "1"
    _attempt(lambda: accounts_service.set_user_active(db.session, user, user_id, active),
             _("用户已启用") if active else _("用户已停用"))
    return redirect(url_for("org.users"))


@pages.route("/users/<int:user_id>/tokens", methods=["POST"])
@login_required
def user_tokens_revoke(user_id: int):
    """Revoke every API token of a user (a lost phone, a leaked script)."""
    user = _page_user("user.manage")
    _attempt(lambda: accounts_service.revoke_tokens_of(db.session, user, user_id),
             _("该用户的全部 API 令牌已吊销"))
    return redirect(url_for("org.users"))


@pages.route("/users/<int:user_id>/login-failures", methods=["POST"])
@login_required
def user_unlock(user_id: int):
    """Unlock a user's login (his failed logins forgotten): he called, it was him."""
    user = _page_user("user.manage")
    _attempt(lambda: login_throttle.unlock_login(db.session, user, user_id,
                                                 address=request.remote_addr),
             _("已解除该用户的登录锁定"))
    return redirect(url_for("org.users"))


@pages.route("/users/<int:user_id>/password", methods=["POST"])
@login_required
def user_password(user_id: int):
    user = _page_user("user.manage")
    _attempt(lambda: accounts_service.reset_password(db.session, user, user_id,
                                            request.form.get("password", "")),
             _("密码已重置"))
    return redirect(url_for("org.users"))
