"""Accounts: users with a role and a scope, and API bearer tokens."""

from __future__ import annotations

import datetime as dt
import secrets

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.types import UTCDateTime, intpk, utc_datetime, utcnow
from extensions import Model
from org.models import Member, OrgUnit, Site

ROLES = ("admin", "organizer", "trainer", "site_operator", "member")


class User(UserMixin, Model):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("session_token", name="uq_users_session_token"),)

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(100), default="")
    #: admin, organizer, trainer, site_operator or member
    role: Mapped[str] = mapped_column(String(20))
    #: An organizer's scope: this org unit and everything below it.
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    #: A site operator's scope: this one site.
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    #: A member user's roster entry.
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    active: Mapped[bool] = mapped_column(default=True)
    #: UI language, "zh" or "en"; None follows the browser, then Chinese.
    locale: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    #: Flask-Login's id for this user's sessions and remember cookies. Rotated on logout,
    #: password change or reset, deactivation and reactivation: every cookie issued
    #: before then stops working (the numeric id never goes into a cookie).
    session_token: Mapped[str] = mapped_column(String(64),
                                               default=lambda: new_session_token())

    org_unit: Mapped[OrgUnit | None] = relationship()
    site: Mapped[Site | None] = relationship()
    member: Mapped[Member | None] = relationship()
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active

    def get_id(self) -> str:  # Flask-Login's alternative id (see session_token)
        if not self.session_token:
            self.session_token = new_session_token()
        return self.session_token

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role}>"


def new_session_token() -> str:
    return secrets.token_hex(32)


class ApiToken(Model):
    """A bearer token. Only its SHA-256 is stored, so it survives restarts and leaks nothing."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    #: The user a login token acts as; None for a site-screen token.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    #: The meeting room a site-screen token ("site") stands for.
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: "api" (a user's login token) or "site" (a meeting-room screen).
    purpose: Mapped[str] = mapped_column(String(20), default="api")
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: After this the token is refused: a user's YUANJIAO_TOKEN_DAYS after issue, a
    #: meeting-room screen's YUANJIAO_SCREEN_TOKEN_DAYS after issue or its last renewal.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User | None] = relationship(back_populates="tokens")
    site: Mapped[Site | None] = relationship()


class AuditEntry(Model):
    """Who did what to accounts and reviews, for admins: logins (and failures), tokens,
    user changes, attendance locks. Appended, never changed."""

    __tablename__ = "audit_log"

    id: Mapped[intpk]
    at: Mapped[utc_datetime] = mapped_column(default=utcnow, index=True)
    #: The user who acted (None: an unknown username trying to log in).
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    #: login, login_failed, login_throttled, logout, token_issued, tokens_revoked,
    #: user_created, user_deactivated, user_activated, user_role_changed, password_reset,
    #: password_changed,
    #: login_locked, throttle_lifted (an unlock), occurrence_locked, occurrence_unlocked
    action: Mapped[str] = mapped_column(String(40))
    #: The username given at login, or the user acted upon.
    username: Mapped[str] = mapped_column(String(80), default="")
    #: What was acted upon, e.g. "user:12" or "occurrence:7".
    target: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)
