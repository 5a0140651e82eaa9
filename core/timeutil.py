"""Time zones: stored in UTC, shown in the site's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ValidationError

DEFAULT_TZ = "Asia/Shanghai"


def zone(name: str | None) -> ZoneInfo:
    """A ZoneInfo for an IANA name, or a ValidationError naming the field."""
    try:
        return ZoneInfo(name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValidationError(f"未知时区：{name}", field="timezone") from exc


def iso(value: dt.datetime | None, tz: str | None = None) -> str | None:
    """ISO 8601 with its offset, in `tz` when given (else UTC)."""
    if value is None:
        return None
    return value.astimezone(zone(tz) if tz else dt.UTC).isoformat()
