"""Domain errors, and the one place that maps them to HTTP and socket acks."""

from __future__ import annotations

import re
from typing import Any

from flask import has_request_context
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l

#: Any CJK ideograph: a message that still holds one after translation is not English.
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

#: The sentence shown for an error code when its own message has no translation.
#: Services speak Chinese; the edge maps codes to the reader's language.
CODE_MESSAGES: dict[str, Any] = {
    "bad_request": _l("请求无效"),
    "validation_error": _l("输入无效"),
    "not_found": _l("请求的记录不存在"),
    "unauthorized": _l("需要登录"),
    "login_required": _l("需要登录或令牌"),
    "invalid_token": _l("令牌无效、已过期或已吊销"),
    "invalid_credentials": _l("用户名或密码错误"),
    "wrong_password": _l("当前密码不正确"),
    "weak_password": _l("密码太弱"),
    "too_many_attempts": _l("登录失败次数过多，请稍后再试"),
    "payload_too_large": _l("请求内容过大"),
    "too_many_events": _l("日历文件中的事件过多"),
    "out_of_range": _l("数值超出允许范围"),
    "forbidden": _l("无权执行此操作"),
    "conflict": _l("与现有记录冲突"),
    "schedule_conflict": _l("与已有安排时间冲突"),
    "has_attendance": _l("该场次已有考勤记录，不能删除"),
    "in_use": _l("该记录仍被使用，不能删除"),
    "not_empty": _l("该组织下仍有内容，不能删除"),
    "cycle": _l("不能把组织移到它自己的下级"),
    "occurrence_locked": _l("该场次考勤已锁定"),
    "occurrence_cancelled": _l("该场次已取消"),
    "checked_in_elsewhere": _l("该党员已在其他学习点签到"),
    "qr_refused": _l("扫码签到被拒绝"),
    "qr_expired": _l("二维码已过期，请扫描屏幕上的新二维码"),
    "qr_reused": _l("该二维码已使用过，请扫描屏幕上的新二维码"),
    "qr_invalid": _l("二维码无效"),
    "qr_not_expected": _l("您不在本次学习活动的应到名单中，请找会议室管理员点名登记"),
    "qr_network": _l("请连接会议室的网络后再扫码签到"),
    "qr_code_required": _l("请输入屏幕上二维码旁的 4 位签到码"),
    "qr_code_wrong": _l("签到码不正确"),
    "not_ended": _l("学习活动尚未结束：提前锁定须明确确认并填写原因"),
    "no_media_session": _l("未检测到直播画面连接：画面播放后才计入学习时长"),
    "attendance_busy": _l("考勤服务繁忙，请稍后重试"),
    "write_failed": _l("考勤写入失败，请重试"),
    "bad_sdp": _l("SDP 无效"),
    "unsupported_media_type": _l("不支持的内容类型"),
    "media_unavailable": _l("直播媒体服务不可用"),
    "not_live": _l("直播尚未开始，请稍候重试"),
    "already_live": _l("该场次已在直播中"),
    "precondition_failed": _l("If-Match 与该资源当前的 ETag 不符"),
    "ice_restart_unsupported": _l("不支持 ICE 重启，请重新发起连接"),
    "foreign_stream_key": _l("推流密钥属于其他场次"),
    "feed_revoked": _l("该订阅地址已吊销"),
    "unsupported_file": _l("不支持的文件类型"),
    "import_refused": _l("文件未能导入，请检查后重试"),
    "empty_file": _l("文件为空"),
    "too_many_rows": _l("文件行数过多"),
    "missing_columns": _l("文件缺少必需的列"),
    "invalid_calendar": _l("日历文件无效"),
}

#: When a code has no sentence of its own: one per HTTP status class.
STATUS_MESSAGES: dict[int, Any] = {
    401: _l("需要登录"),
    403: _l("无权执行此操作"),
    404: _l("请求的记录不存在"),
    409: _l("与现有记录冲突"),
    413: _l("请求内容过大"),
    422: _l("输入无效"),
    429: _l("请求过于频繁，请稍后再试"),
    503: _l("服务暂不可用，请稍后重试"),
}


def localize(message: str, code: str, status: int, details: dict[str, Any]) -> str:
    """The message in the reader's language.

    Chinese readers get the service's own sentence. Others get its catalogue translation
    when the sentence is a catalogued literal, else the sentence of its code (with the
    field it names, if any): never Chinese text, except data in `details`.
    """
    if not has_request_context():
        return message
    locale = get_locale()
    if locale is None or locale.language == "zh":
        return message
    translated = gettext(message) if "%" not in message else message
    if not _CJK.search(translated):
        return translated
    generic = CODE_MESSAGES.get(code) or STATUS_MESSAGES.get(status) or CODE_MESSAGES["bad_request"]
    text = str(generic)
    if _CJK.search(text):  # a sentence the catalogue lacks: the code itself is English
        text = code.replace("_", " ").capitalize()
    field = details.get("field") if isinstance(details, dict) else None
    if isinstance(field, str) and field and not _CJK.search(field):
        text = f"{text} ({field})"
    return text


class DomainError(Exception):
    """Base of every domain's errors.

    `code` is a stable machine-readable string, `message` a human sentence
    (already translated where it reaches users), `details` structured extras
    such as the field that was wrong or the occurrence that clashed.
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        #: The service's own sentence (Chinese); `message` gives it in the reader's language.
        self.raw_message = message
        self.details = details or {}
        if code:
            self.code = code

    @property
    def message(self) -> str:
        """The sentence in the current request's language (see `localize`)."""
        return localize(self.raw_message, self.code, self.status, self.details)

    @message.setter
    def message(self, value: str) -> None:
        self.raw_message = value

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class ValidationError(DomainError):
    status = 422
    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None,
                 details: dict[str, Any] | None = None, code: str | None = None) -> None:
        details = dict(details or {})
        if field:
            details.setdefault("field", field)
        super().__init__(message, details=details, code=code)


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class TooManyRequests(DomainError):
    """429; `details["retry_after"]` (seconds) becomes the Retry-After header."""

    status = 429
    code = "too_many_requests"


def socket_ack(error: Exception) -> dict[str, Any]:
    """The ack a socket handler returns when it refuses an event."""
    if isinstance(error, DomainError):
        return {"ok": False, "error": error.code, "message": error.message,
                "details": error.details}
    return {"ok": False, "error": "internal_error", "message": str(_l("服务器内部错误"))}
