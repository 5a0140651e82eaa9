"""Demo data for the embedded default (filled in by the sessions work)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from org.models import OrgUnit


def is_empty(session: Session) -> bool:
    return session.scalar(select(OrgUnit.id).limit(1)) is None


def seed(session: Session) -> list[str]:
    """Seed the demo organization; returns lines (demo logins) to print."""
    return []
