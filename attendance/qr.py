"""QR check-in: the rotating token, the spoken room code, the network rule.

Part of the attendance service (`attendance.service` re-exports every public name).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from attendance.access import require_site_of_occurrence
from attendance.errors import (
    Forbidden,
    QrNotAllowed,
    QrRefused,
)
from attendance.lookups import get_occurrence, get_site, is_expected
from attendance.reactions import occurrences_with_attendance  # noqa: F401  (re-exported)
from org.models import Member, Site
from sessions.models import Occurrence

log = logging.getLogger(__name__)


def _qr_serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="attendance-qr")


def qr_slot(now: dt.datetime, rotate_seconds: int) -> int:
    return int(now.timestamp() // rotate_seconds)


def make_qr_token(secret: str, occurrence_id: int, site_id: int, now: dt.datetime,
                  rotate_seconds: int) -> tuple[str, dt.datetime]:
    """The current rotating token of a site screen, and when the next one replaces it."""
    slot = qr_slot(now, rotate_seconds)
    token = _qr_serializer(secret).dumps({"o": occurrence_id, "s": site_id, "t": slot})
    next_at = dt.datetime.fromtimestamp((slot + 1) * rotate_seconds, dt.UTC)
    return token, next_at


def read_qr_token(secret: str, token: str, now: dt.datetime, rotate_seconds: int
                  ) -> tuple[int, int]:
    """(occurrence_id, site_id) of a token of the current or the previous slot."""
    occurrence_id, site_id, _slot = _read_qr(secret, token, now, rotate_seconds)
    return occurrence_id, site_id


def _read_qr(secret: str, token: str, now: dt.datetime, rotate_seconds: int
             ) -> tuple[int, int, int]:
    try:
        data = _qr_serializer(secret).loads(token)
        occurrence_id, site_id, slot = int(data["o"]), int(data["s"]), int(data["t"])
    except (BadSignature, KeyError, TypeError, ValueError) as exc:
        raise QrRefused("二维码无效", code="qr_invalid") from exc
    if qr_slot(now, rotate_seconds) - slot not in (0, 1):
        raise QrRefused("二维码已过期，请扫描屏幕上的最新二维码", code="qr_expired")
    return occurrence_id, site_id, slot


def room_code(secret: str, occurrence_id: int, site_id: int, slot: int) -> str:
    """The 4-digit code shown beside a slot's QR (said aloud in the room)."""
    import hmac

    digest = hmac.new(secret.encode(), f"room-code:{occurrence_id}:{site_id}:{slot}".encode(),
                      hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 10000:04d}"


def current_room_code(secret: str, occurrence_id: int, site_id: int, now: dt.datetime,
                      rotate_seconds: int) -> str:
    return room_code(secret, occurrence_id, site_id, qr_slot(now, rotate_seconds))


def _in_networks(remote_addr: str | None, networks: str) -> bool:
    import ipaddress

    try:
        addr = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for line in networks.splitlines():
        try:
            if addr in ipaddress.ip_network(line.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass
class QrCheckIn:
    """A QR check-in that passed every rule, ready for the writer."""

    occurrence: Occurrence
    site: Site
    member: Member
    source: str
    event_id: str


def qr_check_in_rules(session: Session, *, token: str, member: Member, secret: str,
                      now: dt.datetime, rotate_seconds: int, code: str | None = None,
                      remote_addr: str | None = None) -> QrCheckIn:
    """Every rule of a QR check-in but the once-per-token one (the log's key holds that).

    The token is the screen's current (or previous) one; the site is one of the
    occurrence's; the member is on the roll and expected at the occurrence (a walk-in is
    the operator's roll call); the occurrence has not ended; and, where the site asks for
    them, the phone is on one of the site's networks and the member typed the 4-digit code
    shown beside the QR. A forwarded link fails the last two; an outsider fails the roll.
    """
    occurrence_id, site_id, slot = _read_qr(secret, token, now, rotate_seconds)
    occurrence = get_occurrence(session, occurrence_id)
    site = get_site(session, site_id)
    require_site_of_occurrence(session, occurrence, site)
    if member.status != "active":
        raise Forbidden("该党员不在册（已转出）")
    if now > occurrence.ends_at:
        raise QrRefused("学习活动已结束", code="qr_expired")
    if not is_expected(session, occurrence, member.id):
        raise QrNotAllowed(
            "您不在本次学习活动的应到名单中；临时参加请找会议室管理员点名登记（记为列席）",
            code="qr_not_expected")
    if site.checkin_networks and not _in_networks(remote_addr, site.checkin_networks):
        raise QrNotAllowed("请连接会议室的网络后再扫码签到（本学习点只接受会场网络内的签到）",
                        code="qr_network")
    if site.checkin_code_required:
        typed = (code or "").strip()
        if not typed:
            raise QrRefused("请输入屏幕上二维码旁的 4 位签到码", code="qr_code_required",
                            details={"field": "code"})
        valid = {room_code(secret, occurrence.id, site.id, s) for s in (slot, slot + 1)}
        if typed not in valid:
            raise QrRefused("签到码不正确，请看屏幕上二维码旁的 4 位数字", code="qr_code_wrong",
                            details={"field": "code"})
    return QrCheckIn(occurrence, site, member, source=f"qr:member:{member.id}",
                     event_id=hashlib.sha256(token.encode()).hexdigest())
