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


#: Input dates outside these years are refused (422): a study plan, a report or an
#: import lives in this century, and year 1 or 9999 overflowed on conversion.
MIN_YEAR, MAX_YEAR = 2000, 2100


def in_window(value: dt.date | dt.datetime) -> bool:
    """Whether a date (or datetime, in UTC) falls within MIN_YEAR..MAX_YEAR."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:
            return False
    return MIN_YEAR <= value.year <= MAX_YEAR


def require_window(value, field: str):
    """`value` unchanged when in_window, else ValidationError on `field`."""
    if not in_window(value):
        raise ValidationError(f"{field} 必须在 {MIN_YEAR} 年到 {MAX_YEAR} 年之间", field=field,
                              details={"min_year": MIN_YEAR, "max_year": MAX_YEAR})
    return value


def iso(value: dt.datetime | None, tz: str | None = None) -> str | None:
    """ISO 8601 with its offset, in `tz` when given (else UTC)."""
    if value is None:
        return None
    return value.astimezone(zone(tz) if tz else dt.UTC).isoformat()
