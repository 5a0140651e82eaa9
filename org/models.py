"""The organization: org units as a tree, sites (meeting rooms) and the member roster."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.timeutil import DEFAULT_TZ
from core.types import intpk, utc_datetime, utcnow
from extensions import Model

ORG_UNIT_KINDS = ("committee", "general_branch", "branch", "group")
MEMBER_CATEGORIES = ("full", "probationary", "activist", "mobile")
MEMBER_STATUSES = ("active", "transferred")


class OrgUnit(Model):
    __tablename__ = "org_units"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    #: committee, general_branch, branch or group
    kind: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    #: Materialized path of ids, "/1/4/9/", so that a subtree is one LIKE query.
    path: Mapped[str] = mapped_column(String(500), index=True, default="/")
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)

    parent: Mapped[OrgUnit | None] = relationship(
        remote_side="OrgUnit.id", back_populates="children"
    )
    children: Mapped[list[OrgUnit]] = relationship(back_populates="parent")
    sites: Mapped[list[Site]] = relationship(back_populates="org_unit")
    members: Mapped[list[Member]] = relationship(back_populates="org_unit")

    def __repr__(self) -> str:
        return f"<OrgUnit {self.id} {self.name}>"


class Site(Model):
    """A meeting room at a work site, where members gather to watch a lecture."""

    __tablename__ = "sites"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(300), default="")
    org_unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    #: IANA zone the site's screen and exports show times in.
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TZ)
    capacity: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    #: QR check-in only from these networks (CIDRs, one per line or comma); "" = anywhere.
    checkin_networks: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    #: QR check-in also asks for the 4-digit code shown beside the QR (said aloud in the room).
    checkin_code_required: Mapped[bool] = mapped_column(default=False, server_default=false())

    org_unit: Mapped[OrgUnit] = relationship(back_populates="sites")

    def __repr__(self) -> str:
        return f"<Site {self.id} {self.name}>"


class Member(Model):
    """A person on the roster: full or probationary Party member, activist, mobile member."""

    __tablename__ = "members"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100))
    #: 党员编号, unique across the whole organization.
    member_no: Mapped[str] = mapped_column(String(50), unique=True)
    org_unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    home_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    category: Mapped[str] = mapped_column(String(20), default="full")
    phone: Mapped[str] = mapped_column(String(30), default="")
    #: active, or transferred (转出): kept for history, no longer expected.
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[utc_datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[utc_datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    org_unit: Mapped[OrgUnit] = relationship(back_populates="members")
    home_site: Mapped[Site | None] = relationship()

    def __repr__(self) -> str:
        return f"<Member {self.member_no} {self.name}>"
