"""Attendance sheets as xlsx (openpyxl) and csv (UTF-8 with BOM, for Excel and WPS)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from attendance.service import STATUS_LABELS, Row
from core.spreadsheet import csv_row, strip_control, xlsx_append
from core.timeutil import zone

HEADERS = ["姓名", "党员编号", "所在支部", "学习点", "首次签到", "最后签退", "时长(分钟)",
           "状态", "备注"]
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="F2DCDB")


def _local(value: dt.datetime | None, tz: str) -> dt.datetime | None:
    """A naive local datetime: Excel has no time zones, so cells hold the site's wall time."""
    if value is None:
        return None
    return value.astimezone(zone(tz)).replace(tzinfo=None)


def _tz(row: Row, default_tz: str) -> str:
    return row.site.timezone if row.site else default_tz


def _values(row: Row, default_tz: str) -> list[Any]:
    tz = _tz(row, default_tz)
    rec = row.record
    return [row.member.name, row.member.member_no,
            row.member.org_unit.name if row.member.org_unit else "",
            row.site.name if row.site else "", _local(rec.first_join, tz),
            _local(rec.last_leave, tz), rec.minutes, STATUS_LABELS.get(rec.status, rec.status),
            row.notes]


def _header(ws, headers: list[str], widths: list[int]) -> None:
    ws.append(headers)
    for i, width in enumerate(widths, start=1):
        cell = ws.cell(row=1, column=i)
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
        cell.alignment = Alignment(horizontal="center")
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"


def sheet_xlsx(title: str, rows: list[Row], default_tz: str) -> bytes:
    """The attendance sheet: one row per expected member, and a summary per site."""
    wb = Workbook()
    ws = wb.active
    ws.title = "考勤明细"
    _header(ws, HEADERS, [12, 14, 20, 18, 20, 20, 12, 8, 40])
    for row in rows:
        xlsx_append(ws, _values(row, default_tz))
        r = ws.max_row
        for col in (5, 6):
            ws.cell(row=r, column=col).number_format = "yyyy-mm-dd hh:mm:ss"
    summary = wb.create_sheet("学习点汇总")
    labels = [STATUS_LABELS[s] for s in ("present", "late", "left_early", "absent", "excused")]
    _header(summary, ["学习点", "应到", "实到", *labels, "出勤率"],
            [20, 8, 8, 8, 8, 8, 8, 8, 10])
    per_site: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts = per_site[row.site.name if row.site else "个人在线/其他"]
        counts["expected"] += 1 if row.expected else 0
        counts[row.record.status] += 1
    for name, c in per_site.items():
        came = c["present"] + c["late"] + c["left_early"]
        due = c["expected"] - c["excused"]
        xlsx_append(summary, [name, c["expected"], came, c["present"], c["late"],
                              c["left_early"], c["absent"], c["excused"],
                              round(came / due, 4) if due > 0 else None])
        summary.cell(row=summary.max_row, column=9).number_format = "0.0%"
    wb.properties.title = strip_control(title)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def sheet_csv(rows: list[Row], default_tz: str) -> bytes:
    """The same sheet as csv; the BOM makes Excel and WPS read it as UTF-8."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADERS)
    for row in rows:
        values = _values(row, default_tz)
        for i in (4, 5):
            values[i] = values[i].strftime("%Y-%m-%d %H:%M:%S") if values[i] else ""
        writer.writerow(csv_row(values))
    return buf.getvalue().encode("utf-8-sig")


def ledger_xlsx(ledger: dict[str, Any]) -> bytes:
    """学时台账: annual hours per member against the requirement."""
    wb = Workbook()
    ws = wb.active
    ws.title = f"{ledger['year']}年学时台账"
    _header(ws, ["姓名", "党员编号", "所在支部", "现场/在线学时", "补学学时", "合计学时",
                 "年度要求", "差额", "是否达标"], [12, 14, 20, 14, 10, 10, 10, 8, 10])
    for r in ledger["rows"]:
        xlsx_append(ws, [r["member"].name, r["member"].member_no,
                   r["unit"].name if r["unit"] else "", r["live_hours"], r["makeup_hours"],
                   r["total_hours"], ledger["required"], r["shortfall"],
                   "未达标" if r["short"] else "达标"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
