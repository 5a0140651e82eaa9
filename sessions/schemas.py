"""API schemas of the sessions domain. Every time goes out as ISO 8601 with its offset."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask_babel import lazy_gettext as _l
from flask_smorest.fields import Upload
from marshmallow import EXCLUDE, Schema, fields, validate
from marshmallow import ValidationError as MarshmallowError

from core.timeutil import DEFAULT_TZ, MAX_YEAR, MIN_YEAR, in_window
from sessions.models import OCCURRENCE_STATUSES, SESSION_KINDS

_SPACE_OFFSET = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


class OffsetDateTime(fields.AwareDateTime):
    """An ISO 8601 datetime that must carry its offset.

    A "+" left unescaped in a query string arrives as a space ("...T09:00:00 08:00");
    we read it as the "+" the caller meant rather than refuse it.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            m = _SPACE_OFFSET.match(value.strip())
            if m:
                value = f"{m.group(1)}+{m.group(2)}"
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if not in_window(parsed):
            raise MarshmallowError(_l("时间必须在 %(lo)s 年到 %(hi)s 年之间", lo=MIN_YEAR,
                                      hi=MAX_YEAR))
        return parsed


class IdList(fields.List):
    """Ids given as a JSON list, repeated form fields, or one comma-separated string."""

    def __init__(self, **kwargs) -> None:
        super().__init__(fields.Integer(strict=False), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            items: list = []
            for item in value:
                if isinstance(item, str):
                    items.extend(p.strip() for p in item.split(",") if p.strip())
                else:
                    items.append(item)
            value = items
        return super()._deserialize(value, attr, data, **kwargs)


class SessionIn(Schema):
    """A study session as created (all fields) or edited (any subset)."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(SESSION_KINDS))
    description = fields.String()
    trainer_id = fields.Integer(allow_none=True, strict=True)
    starts_at = OffsetDateTime(required=True, metadata={"example": "2026-03-04T19:30:00+08:00"})
    duration_minutes = fields.Integer(required=True, strict=True,
                                      validate=validate.Range(min=1, max=1440))
    timezone = fields.String(validate=validate.Length(min=1, max=64),
                             metadata={"example": DEFAULT_TZ})
    rrule = fields.String(allow_none=True, metadata={
        "description": "RFC 5545 RRULE without the RRULE: prefix",
        "example": "FREQ=WEEKLY;BYDAY=WE"})
    exdates = fields.List(OffsetDateTime())
    site_ids = fields.List(fields.Integer(strict=True))
    org_unit_ids = fields.List(fields.Integer(strict=True))
    late_after_minutes = fields.Integer(strict=True, validate=validate.Range(min=0, max=1440))
    present_threshold_percent = fields.Integer(strict=True,
                                               validate=validate.Range(min=0, max=100))
    video_bitrate_kbps = fields.Integer(strict=True, validate=validate.Range(min=100, max=20000))
    video_height = fields.Integer(strict=True, validate=validate.Range(min=144, max=2160))
    location = fields.String(validate=validate.Length(max=300))


class SessionPatch(SessionIn):
    """Any subset of a session's fields (used with partial=True)."""


class PreviewIn(SessionIn):
    """A form's content to check: next occurrences and clashes, nothing saved."""

    session_id = fields.Integer(allow_none=True, metadata={
        "description": "the session being edited (its own occurrences never clash)"})


class NamedRef(Schema):
    id = fields.Integer()
    name = fields.String()


class SessionOut(Schema):
    id = fields.Integer()
    uid = fields.String()
    title = fields.String()
    kind = fields.String()
    description = fields.String()
    trainer_id = fields.Integer(allow_none=True)
    trainer_name = fields.Function(
        lambda s: (s.trainer.display_name or s.trainer.username) if s.trainer else None)
    starts_at = fields.AwareDateTime()
    duration_minutes = fields.Integer()
    timezone = fields.String()
    rrule = fields.String(allow_none=True)
    exdates = fields.List(fields.String())
    site_ids = fields.Function(lambda s: [x.id for x in s.sites])
    org_unit_ids = fields.Function(lambda s: [x.id for x in s.org_units])
    sites = fields.Function(lambda s: [{"id": x.id, "name": x.name} for x in s.sites])
    org_units = fields.Function(lambda s: [{"id": x.id, "name": x.name} for x in s.org_units])
    late_after_minutes = fields.Integer()
    present_threshold_percent = fields.Integer()
    video_bitrate_kbps = fields.Integer()
    video_height = fields.Integer()
    location = fields.String()
    sequence = fields.Integer()
    materialized_until = fields.AwareDateTime(allow_none=True)
    occurrence_count = fields.Function(lambda s: len(s.occurrences))
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class SessionQuery(Schema):
    kind = fields.String(validate=validate.OneOf(SESSION_KINDS))
    site_id = fields.Integer()
    org_unit_id = fields.Integer()
    trainer_id = fields.Integer()
    q = fields.String()


class OccurrenceOut(Schema):
    id = fields.Integer()
    session_id = fields.Integer()
    title = fields.String()
    timezone = fields.String()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    original_start = fields.AwareDateTime()
    status = fields.String()
    overridden = fields.Boolean()
    sequence = fields.Integer()


class OccurrenceQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    start = OffsetDateTime(data_key="from")
    end = OffsetDateTime(data_key="to")
    site_id = fields.Integer()
    org_unit_id = fields.Integer()
    session_id = fields.Integer()
    status = fields.String(validate=validate.OneOf(OCCURRENCE_STATUSES))


class RangeQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    start = OffsetDateTime(data_key="from")
    end = OffsetDateTime(data_key="to")


class OccurrencePatch(Schema):
    starts_at = OffsetDateTime()
    status = fields.String(validate=validate.OneOf(OCCURRENCE_STATUSES))


class ImportFiles(Schema):
    file = Upload(required=True)


class ImportForm(Schema):
    class Meta:
        unknown = EXCLUDE

    site_ids = IdList(load_default=list)
    org_unit_ids = IdList(load_default=list)
    trainer_id = fields.Integer(allow_none=True, load_default=None)
    dry_run = fields.Boolean(load_default=False)


class ImportChange(Schema):
    uid = fields.String()
    title = fields.String()
    action = fields.String(metadata={"enum": ["created", "updated", "unchanged"]})
    session_id = fields.Integer(allow_none=True)
    occurrences = fields.Integer()


class ImportOut(Schema):
    ids = fields.List(fields.Integer())
    sessions = fields.List(fields.Nested(SessionOut))
    notes = fields.List(fields.String())
    changes = fields.List(fields.Nested(ImportChange))
    dry_run = fields.Boolean()


class PreviewOccurrence(Schema):
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()


class PreviewMove(Schema):
    from_ = fields.AwareDateTime(data_key="from", attribute="from")
    to = fields.AwareDateTime()


class PreviewChanges(Schema):
    dropped = fields.List(fields.AwareDateTime())
    moved = fields.List(fields.Nested(PreviewMove))
    added = fields.Integer()
    message = fields.String()


class PreviewOut(Schema):
    starts_at = fields.AwareDateTime()
    timezone = fields.String()
    rrule = fields.String(allow_none=True)
    total = fields.Integer()
    occurrences = fields.List(fields.Nested(PreviewOccurrence))
    conflicts = fields.List(fields.Dict())
    changes = fields.Nested(PreviewChanges, allow_none=True, metadata={
        "description": "Editing a series: the booked occurrences it would drop, move or add"})


class FeedUrlOut(Schema):
    url = fields.String()



# --- the session form (pages): plain fields <-> service values ----------------------------

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
#: Service field -> form field, so that a server-side error shows next to its input.
FORM_FIELD = {"starts_at": "start_date", "rrule": "repeat", "site_ids": "targets",
              "org_unit_ids": "targets", "timezone": "timezone", "exdates": "exdates"}
_FORM_LISTS = ("weekdays", "site_ids", "org_unit_ids")
_FORM_INTS = ("duration_minutes", "late_after_minutes", "present_threshold_percent",
              "video_bitrate_kbps", "video_height")


def default_form_values(now: dt.datetime, tz_name: str = DEFAULT_TZ) -> dict:
    local = now.astimezone(ZoneInfo(tz_name)) + dt.timedelta(days=1)
    return {
        "title": "", "kind": "party_history_lecture", "description": "", "trainer_id": "",
        "start_date": local.date().isoformat(), "start_time": "19:30", "timezone": tz_name,
        "duration_minutes": "90", "repeat": "none", "interval": "1",
        "weekdays": [WEEKDAYS[local.weekday()]], "month_day": str(local.day),
        "nth": "-1" if (local.day + 6) // 7 >= 5 else str((local.day + 6) // 7),
        "nth_weekday": WEEKDAYS[local.weekday()], "end": "never", "until": "", "count": "",
        "custom_rrule": "", "site_ids": [], "org_unit_ids": [], "late_after_minutes": "10",
        "present_threshold_percent": "80", "video_bitrate_kbps": "1200", "video_height": "480",
        "location": "", "exdates": "",
    }


def form_values_from_request(form) -> dict:
    values = {k: (form.get(k) or "").strip() for k in default_form_values(dt.datetime.now(dt.UTC))
              if k not in _FORM_LISTS}
    for key in _FORM_LISTS:
        values[key] = form.getlist(key)
    return values


def form_values_from_session(study) -> dict:
    """A stored session as form fields (the picker recognises the rules it can build)."""
    tz = ZoneInfo(study.timezone)
    local = study.starts_at.astimezone(tz)
    values = default_form_values(study.starts_at, study.timezone)
    values.update({
        "title": study.title, "kind": study.kind, "description": study.description or "",
        "trainer_id": str(study.trainer_id or ""), "start_date": local.date().isoformat(),
        "start_time": local.strftime("%H:%M"), "duration_minutes": str(study.duration_minutes),
        "site_ids": [str(s.id) for s in study.sites],
        "org_unit_ids": [str(u.id) for u in study.org_units],
        "late_after_minutes": str(study.late_after_minutes),
        "present_threshold_percent": str(study.present_threshold_percent),
        "video_bitrate_kbps": str(study.video_bitrate_kbps),
        "video_height": str(study.video_height), "location": study.location or "",
        "exdates": "\n".join(dt.datetime.fromisoformat(x).astimezone(tz).strftime("%Y-%m-%d %H:%M")
                             for x in study.exdates or []),
    })
    if study.rrule:
        values.update(_picker_from_rule(study.rrule, tz))
    return values


def _picker_from_rule(rule: str, tz: ZoneInfo) -> dict:
    parts = dict(p.split("=", 1) for p in rule.split(";"))
    out: dict = {"repeat": "custom", "custom_rrule": rule}
    rest = set(parts) - {"FREQ", "INTERVAL", "UNTIL", "COUNT", "BYDAY", "BYMONTHDAY", "WKST"}
    if rest:
        return out
    if "UNTIL" in parts:
        until = dt.datetime.strptime(parts["UNTIL"].rstrip("Z"), "%Y%m%dT%H%M%S")
        out.update(end="until", until=until.replace(tzinfo=dt.UTC).astimezone(tz).date()
                   .isoformat())
    elif "COUNT" in parts:
        out.update(end="count", count=parts["COUNT"])
    out["interval"] = parts.get("INTERVAL", "1")
    byday = parts.get("BYDAY", "")
    if parts["FREQ"] == "WEEKLY" and "BYMONTHDAY" not in parts and \
            all(d in WEEKDAYS for d in byday.split(",") if d):
        out.update(repeat="weekly", weekdays=[d for d in byday.split(",") if d])
    elif parts["FREQ"] == "MONTHLY" and "BYMONTHDAY" in parts and not byday:
        out.update(repeat="monthly_day", month_day=parts["BYMONTHDAY"])
    elif parts["FREQ"] == "MONTHLY" and re.fullmatch(r"(-1|[1-4])(MO|TU|WE|TH|FR|SA|SU)", byday):
        out.update(repeat="monthly_nth", nth=byday[:-2], nth_weekday=byday[-2:])
    return out


def _form_int(values: dict, key: str) -> int:
    try:
        return int(values.get(key) or "")
    except ValueError as exc:
        raise FormError(key, _l("请输入整数")) from exc


class FormError(Exception):
    """A form field that cannot be read; `field` names the input."""

    def __init__(self, field: str, message) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def form_rrule(values: dict) -> str | None:
    """The RRULE the recurrence picker describes (None: no repetition)."""
    repeat = values.get("repeat") or "none"
    if repeat == "none":
        return None
    if repeat == "custom":
        rule = (values.get("custom_rrule") or "").strip()
        if not rule:
            raise FormError("custom_rrule", _l("请填写重复规则"))
        return rule
    interval = _form_int({"i": values.get("interval") or "1"}, "i")
    parts: list[str]
    if repeat == "weekly":
        days = [d for d in values.get("weekdays") or [] if d in WEEKDAYS]
        if not days:
            raise FormError("weekdays", _l("请至少选择一天"))
        parts = ["FREQ=WEEKLY", f"BYDAY={','.join(days)}"]
    elif repeat == "monthly_day":
        day = _form_int(values, "month_day")
        if not 1 <= day <= 31:
            raise FormError("month_day", _l("日期应在 1 到 31 之间"))
        parts = ["FREQ=MONTHLY", f"BYMONTHDAY={day}"]
    elif repeat == "monthly_nth":
        nth, weekday = values.get("nth") or "1", values.get("nth_weekday") or "MO"
        if nth not in ("1", "2", "3", "4", "-1") or weekday not in WEEKDAYS:
            raise FormError("nth", _l("请选择第几个星期几"))
        parts = ["FREQ=MONTHLY", f"BYDAY={nth}{weekday}"]
    else:
        raise FormError("repeat", _l("未知的重复方式"))
    if interval > 1:
        parts.insert(1, f"INTERVAL={interval}")
    end = values.get("end") or "never"
    if end == "until":
        try:
            until = dt.date.fromisoformat(values.get("until") or "")
        except ValueError as exc:
            raise FormError("until", _l("请输入结束日期")) from exc
        parts.append(f"UNTIL={until:%Y%m%d}")
    elif end == "count":
        parts.append(f"COUNT={_form_int(values, 'count')}")
    return ";".join(parts)


def form_to_service_data(values: dict) -> dict:
    """Form fields as `create_session`/`update_session` take them; FormError names a field."""
    tz_name = values.get("timezone") or DEFAULT_TZ
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FormError("timezone", _l("未知时区：%(name)s", name=tz_name)) from exc
    try:
        day = dt.date.fromisoformat(values.get("start_date") or "")
        clock = dt.time.fromisoformat(values.get("start_time") or "")
    except ValueError as exc:
        raise FormError("start_date", _l("请输入开始日期和时间")) from exc
    exdates = []
    for line in (values.get("exdates") or "").splitlines():
        if line.strip():
            try:
                exdates.append(dt.datetime.fromisoformat(line.strip()).replace(tzinfo=tz))
            except ValueError as exc:
                raise FormError("exdates", _l("无法识别的日期：%(value)s",
                                                  value=line.strip())) from exc
    try:
        site_ids = [int(x) for x in values.get("site_ids") or []]
        unit_ids = [int(x) for x in values.get("org_unit_ids") or []]
    except ValueError as exc:
        raise FormError("targets", _l("学习点或组织无效")) from exc
    data = {
        "title": values.get("title") or "", "kind": values.get("kind") or "other",
        "description": values.get("description") or "",
        "trainer_id": int(values["trainer_id"]) if (values.get("trainer_id") or "").isdigit()
        else None,
        "starts_at": dt.datetime.combine(day, clock, tz), "timezone": tz_name,
        "rrule": form_rrule(values), "exdates": exdates, "site_ids": site_ids,
        "org_unit_ids": unit_ids, "location": values.get("location") or "",
    }
    for key in _FORM_INTS:
        data[key] = _form_int(values, key)
    return data
