"""A session's fields checked and normalized before they are applied."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from accounts.models import User
from core.timeutil import DEFAULT_TZ, require_window, zone
from org.models import OrgUnit, Site
from sessions import recurrence
from sessions.access import TRAINER_ROLES
from sessions.errors import ValidationError
from sessions.models import (
    SESSION_KINDS,
)

#: Fields a caller may give when creating or editing a session.
SESSION_FIELDS = (
    "title", "kind", "description", "trainer_id", "starts_at", "duration_minutes",
    "timezone", "rrule", "exdates", "site_ids", "org_unit_ids", "late_after_minutes",
    "present_threshold_percent", "video_bitrate_kbps", "video_height", "location",
)
DEFAULTS: dict[str, Any] = {
    "description": "", "trainer_id": None, "timezone": DEFAULT_TZ, "rrule": None,
    "exdates": [], "site_ids": [], "org_unit_ids": [], "late_after_minutes": 10,
    "present_threshold_percent": 80, "video_bitrate_kbps": 1200, "video_height": 480,
    "location": "", "kind": "other",
}


# --- validation ---------------------------------------------------------------------------


def _aware(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ValidationError(f"{field} 必须是时间", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} 需要带时区偏移（如 +08:00）", field=field)
    require_window(value, field)
    # iCalendar has whole seconds: keep no more, or feeds and rows would disagree.
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _int_in(data: dict, field: str, lo: int, hi: int) -> int:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{field} 必须是 {lo} 到 {hi} 之间的整数", field=field)
    return value


_Target = TypeVar("_Target", Site, OrgUnit)


def _load_targets(session: Session, data: dict) -> tuple[list[Site], list[OrgUnit]]:
    sites = _rows(session, data, "site_ids", Site, "学习点")
    units = _rows(session, data, "org_unit_ids", OrgUnit, "组织")
    if not sites and not units:
        raise ValidationError("至少选择一个学习点或组织", field="site_ids")
    return sites, units


def _rows(session: Session, data: dict, field: str, model: type[_Target],
          label: str) -> list[_Target]:
    """The rows `data[field]` names by id, in order, each once."""
    out: list[_Target] = []
    ids = data.get(field) or []
    if not isinstance(ids, list | tuple):
        raise ValidationError(f"{field} 必须是列表", field=field)
    for raw in dict.fromkeys(ids):
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValidationError(f"{field} 中的 id 无效：{raw}", field=field)
        row = session.get(model, raw)
        if row is None:
            raise ValidationError(f"{label}不存在：{raw}", field=field, details={"id": raw})
        out.append(row)
    return out


def _validate(session: Session, data: dict) -> dict:
    """Check a complete set of session fields; returns them normalized."""
    out = dict(data)
    title = (out.get("title") or "").strip()
    if not title or len(title) > 200:
        raise ValidationError("标题不能为空，且不超过 200 个字符", field="title")
    out["title"] = title
    if out.get("kind") not in SESSION_KINDS:
        raise ValidationError(f"未知的学习类型：{out.get('kind')}", field="kind",
                              details={"allowed": list(SESSION_KINDS)})
    out["description"] = out.get("description") or ""
    out["location"] = (out.get("location") or "")[:300]
    trainer_id = out.get("trainer_id")
    if trainer_id is not None:
        trainer = session.get(User, trainer_id) if isinstance(trainer_id, int) else None
        if trainer is None or not trainer.active or trainer.role not in TRAINER_ROLES:
            raise ValidationError(f"讲师不存在或不是讲师：{trainer_id}", field="trainer_id")
    tz_name = out.get("timezone") or DEFAULT_TZ
    tz = zone(tz_name)
    if "/" not in tz_name and tz_name != "UTC":
        # Windows names ("China Standard Time") and abbreviations only on import.
        raise ValidationError(f"请使用 IANA 时区名称（如 Asia/Shanghai）：{tz_name}",
                              field="timezone")
    out["timezone"] = tz_name
    out["starts_at"] = _aware(out.get("starts_at"), "starts_at")
    out["duration_minutes"] = _int_in(out, "duration_minutes", 1, 1440)
    out["late_after_minutes"] = _int_in(out, "late_after_minutes", 0, 1440)
    out["present_threshold_percent"] = _int_in(out, "present_threshold_percent", 0, 100)
    out["video_bitrate_kbps"] = _int_in(out, "video_bitrate_kbps", 100, 20000)
    out["video_height"] = _int_in(out, "video_height", 144, 2160)
    exdates = out.get("exdates") or []
    if not isinstance(exdates, list | tuple):
        raise ValidationError("exdates 必须是时间列表", field="exdates")
    out["exdates"] = sorted({_aware(x, "exdates") for x in exdates})
    rule = out.get("rrule")
    if rule is not None and not str(rule).strip():
        rule = None
    if rule is not None:
        rule = recurrence.normalize_rrule(str(rule), tz)
        first = recurrence.first_start(rule, out["starts_at"], tz)
        if first is None:
            raise ValidationError("重复规则不产生任何场次", field="rrule")
        # DTSTART must be an instance of its own rule (RFC 5545 leaves the rest undefined):
        # a weekly-on-Wednesday rule entered with a Monday start begins on that Wednesday.
        out["starts_at"] = first
    out["rrule"] = rule
    out["sites"], out["org_units"] = _load_targets(session, out)
    return out
