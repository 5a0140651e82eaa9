"""Login pages, the token endpoint and the users API."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.views import MethodView
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_smorest import Blueprint as ApiBlueprint
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired

from accounts import service
from accounts.errors import Forbidden, TooManyRequests, Unauthorized
from accounts.models import User
from accounts.schemas import (
    AuditEntryOut,
    TokenRequest,
    TokenResponse,
    UserIn,
    UserOut,
    UserPatch,
)
from accounts.throttle import throttle, unlock_login
from config import settings
from core import policy, ratelimit
from core.api import api, bearer_token, current_api_user, current_principal
from core.pagination import SelectPage
from core.principals import register_token_loader
from core.types import utcnow
from extensions import csrf, db

log = logging.getLogger(__name__)

pages = Blueprint("accounts", __name__)
blp = ApiBlueprint("auth", __name__, url_prefix="/api/v1", description="登录令牌与用户")


def init_app(app: Flask) -> None:
    app.register_blueprint(pages)
    api.register_blueprint(blp)
    csrf.exempt(blp)
    # core asks accounts who a bearer token is, without importing accounts.
    register_token_loader(service.principal_for_token)
    # At the app context's end: after a request, a socket event, or a hot socket event
    # (core.sockets.on_hot), which runs in an app context only.
    app.teardown_appcontext(_record_token_use)


def _record_token_use(_error: BaseException | None = None) -> None:
    """After a request or socket event: write `last_used_at` of the tokens it used (at most
    once a minute each), in a transaction of its own, once the request's session is done.
    An event that used no database session makes none here (a hot event's usual case:
    making one only to look was 9 % of a web process's CPU in a burst of check-ins)."""
    if not db.session.registry.has():  # type: ignore[attr-defined]
        return
    used = db.session.info.pop(service.TOKENS_USED, None)
    if not used:
        return
    db.session.remove()
    try:
        with db.engine.begin() as connection:
            service.record_token_use(connection, used, utcnow())
    except SQLAlchemyError:
        log.warning("could not record the use of tokens %s", sorted(used), exc_info=True)


class LoginForm(FlaskForm):
    username = StringField(_l("用户名"), validators=[DataRequired()])
    password = PasswordField(_l("密码"), validators=[DataRequired()])


def _safe_next(target: str | None) -> str:
    """Only same-site relative targets, so login cannot redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc:
        return target
    return url_for("sessions.dashboard")


@pages.route("/login", methods=["GET", "POST"])
@ratelimit.limit_logins
def login():
    """The login form; after login the browser lands on the dashboard (or ?next=)."""
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = _authenticate(form.username.data or "", form.password.data or "")
        except TooManyRequests as exc:
            flash(exc.message, "error")
            return render_template("accounts/login.html", form=form), 429, {
                "Retry-After": str(exc.details["retry_after"])}
        except Unauthorized:
            flash(_("用户名或密码错误"), "error")
        else:
            login_user(user, remember=True)
            db.session.commit()  # the audit entry
            return redirect(_safe_next(request.args.get("next")))
    return render_template("accounts/login.html", form=form), (400 if form.errors else 200)


def _authenticate(username: str, password: str) -> User:
    """Check a login, throttled per username and per address (429 with Retry-After)."""
    limiter = throttle()
    address = request.remote_addr
    wait = limiter.retry_after(username, address)
    if wait is not None:
        _audit_now("login_throttled", username=username, address=address,
                   details={"retry_after": wait})
        when = f"{wait} 秒" if wait < 60 else f"{(wait + 59) // 60} 分钟"
        raise TooManyRequests(f"登录失败次数过多，请 {when}后再试",
                              code="too_many_attempts", details={"retry_after": wait})
    try:
        user = service.authenticate(db.session, username, password)
    except Unauthorized:
        outcome = limiter.failed(username, address)
        _audit_now("login_failed", username=username, address=address)
        for kind in outcome.locked:  # this failure locked the username or the address
            rule = limiter.rules[kind]
            _audit_now("login_locked", username=username, address=address,
                       target=f"address:{address}" if kind == "address" else "",
                       details={"failures": rule.lock, "seconds": int(rule.lock_seconds)})
        raise
    limiter.succeeded(username)
    service.audit(db.session, "login", actor=user, username=user.username, address=address,
                  details={"via": "api" if request.path.startswith("/api/") else "page"})
    return user


def _audit_now(action: str, **fields) -> None:
    """Record a refused login at once: the refusal rolls the request's session back."""
    db.session.rollback()
    service.audit(db.session, action, **fields)
    db.session.commit()


@pages.route("/logout", methods=["POST"])
@login_required
def logout():
    """Log out: every session and remember cookie of this user stops working."""
    user = current_user._get_current_object()
    service.end_sessions(user)
    service.audit(db.session, "logout", actor=user, username=user.username,
                  address=request.remote_addr)
    db.session.commit()
    logout_user()
    return redirect(url_for("accounts.login"))


@blp.route("/auth/token", methods=["POST"])
@blp.arguments(TokenRequest)
@blp.response(200, TokenResponse)
@blp.doc(security=[])
@blp.alt_response(429, description="too many logins for this username, or a throttled one")
@ratelimit.limit_logins
def issue_token(data):
    """Exchange a username and password for an API bearer token (it expires after
    YUANJIAO_TOKEN_DAYS, 90 by default; `expires_at` says when)."""
    user = _authenticate(data["username"], data["password"])
    now = utcnow()
    days = settings().token_days
    token = service.issue_token(db.session, user, now, days)
    db.session.commit()
    return {"token": token, "expires_at": now + dt.timedelta(days=days)}


@blp.route("/auth/token", methods=["DELETE"])
@blp.response(204)
def revoke_token():
    """Revoke the bearer token this request carries (log out of the API)."""
    token = bearer_token()
    if not token:
        raise Unauthorized("需要 Bearer 令牌", code="login_required")
    current_principal()
    service.revoke_token(db.session, token)
    db.session.commit()


@blp.route("/users/<int:user_id>/login-failures", methods=["DELETE"])
@blp.response(204)
def clear_login_failures(user_id: int):
    """Unlock a user's login: his failed logins, their delay and lock, are forgotten (he
    called: it was him mistyping). Admins, and organizers for their subtree's users."""
    unlock_login(db.session, current_api_user("user.manage"), user_id,
                 address=request.remote_addr)
    db.session.commit()


@blp.route("/audit-log")
@blp.response(200, AuditEntryOut(many=True))
@blp.paginate(SelectPage, page_size=100, max_page_size=1000)
def audit_log():
    """Logins, failures, tokens, user changes and locks, newest first (admins only)."""
    return service.audit_query(db.session, current_api_user("audit.read"))


@blp.route("/users/<int:user_id>/tokens", methods=["DELETE"])
@blp.response(204)
def revoke_user_tokens(user_id: int):
    """Revoke every API token of a user: the user himself, or one who manages him."""
    service.revoke_tokens_of(db.session, current_api_user(), user_id)
    db.session.commit()


@blp.route("/users")
class Users(MethodView):
    @blp.response(200, UserOut(many=True))
    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self):
        """Users an admin sees all of; an organizer, those scoped inside his subtree."""
        return service.users_query(db.session, current_api_user("user.manage"))

    @blp.arguments(UserIn)
    @blp.response(201, UserOut)
    def post(self, data):
        """Create a user. Organizers create users only inside their own subtree, never admins."""
        caller = current_api_user("user.manage")
        user = service.create_user_for(db.session, caller, **data)
        db.session.commit()
        return user


@blp.route("/users/<int:user_id>")
class UserById(MethodView):
    @blp.response(200, UserOut)
    def get(self, user_id: int):
        caller = current_api_user()
        user = service.get_user(db.session, user_id)
        if caller.id != user.id:
            _require_manage(caller, user)  # its own refusals (the role, the scope)
        policy.require(caller, "user.read", user)
        return user

    @blp.arguments(UserPatch)
    @blp.response(200, UserOut)
    def patch(self, data, user_id: int):
        """Rename, (de)activate, reset the password of, set the language of, or move a
        user to another role or scope.

        A user may change his own name, password and language; admins and organizers
        (within their subtree, never admins or trainers) may change others. A change of
        role or scope, a password reset and a deactivation end every session, remember
        cookie and API token of the user."""
        caller = current_api_user()
        user = service.get_user(db.session, user_id)
        current_password = data.pop("current_password", None)
        scope = {key: data.pop(key) for key in ("role", "org_unit_id", "site_id", "member_id")
                 if key in data}
        if scope:
            if caller.id == user.id:
                raise Forbidden("不能修改自己的角色或范围")
            service.change_role(db.session, caller, user.id, **scope)
        if caller.id == user.id:
            if "active" in data:
                raise Forbidden("不能停用自己的账号")
            if "password" in data:
                service.change_own_password(user, current_password, data.pop("password"))
                service.audit(db.session, "password_changed", actor=user,
                              username=user.username, target=f"user:{user.id}",
                              address=request.remote_addr)
                if not bearer_token():  # this browser stays logged in, the others do not
                    login_user(user, remember=True)
        else:
            _require_manage(caller, user)
            for key, action in (("password", "password_reset"), ("active", None)):
                if key in data:
                    action = action or ("user_activated" if data["active"]
                                        else "user_deactivated")
                    service.audit(db.session, action, actor=caller, username=user.username,
                                  target=f"user:{user.id}", address=request.remote_addr)
        service.update_user(user, **data)
        db.session.commit()
        return user


@blp.route("/users/me")
@blp.response(200, UserOut)
def me():
    """The calling user."""
    return current_api_user()


def _require_manage(caller: User, user: User) -> None:
    service.require_manage_user(db.session, caller, role=user.role,
                                org_unit_id=user.org_unit_id, site_id=user.site_id,
                                member_id=user.member_id)
