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
from openpyxl.worksheet.worksheet import Worksheet

from attendance.service import STATUS_LABELS, Row
from core.spreadsheet import csv_row, strip_control, xlsx_append
from core.timeutil import zone

HEADERS = ["姓名", "党员编号", "所在支部", "学习点", "首次签到", "最后签退", "时长(分钟)",
           "状态", "备注"]
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="F2DCDB")
SUBTOTAL_FILL = PatternFill("solid", fgColor="F7F0E6")


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


def _header(ws, headers: list[str], widths: list[int], row: int = 1) -> None:
    """The column headers on `row`, styled, frozen below and repeated on every page."""
    for i, text in enumerate(headers, start=1):
        ws.cell(row=row, column=i, value=text)
    for i, width in enumerate(widths, start=1):
        cell = ws.cell(row=row, column=i)
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
        cell.alignment = Alignment(horizontal="center", wrap_text=True)
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = f"A{row + 1}"
    ws.print_title_rows = f"{row}:{row}"


def _print_setup(ws) -> None:
    """A4 landscape, one page wide (as many pages tall as needed), centred, page numbers."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.horizontalCentered = True
    ws.page_margins.left = ws.page_margins.right = 0.4
    ws.oddFooter.center.text = "第 &P 页，共 &N 页"


def _title_rows(ws, lines: list[str], width: int) -> int:
    """Title lines above the table (merged across it); returns the header's row."""
    for i, text in enumerate(lines, start=1):
        cell = ws.cell(row=i, column=1, value=strip_control(text))
        cell.font = Font(bold=True, size=14) if i == 1 else Font(size=11)
        cell.alignment = Alignment(horizontal="center" if i == 1 else "left",
                                   vertical="center")
        ws.merge_cells(start_row=i, start_column=1, end_row=i, end_column=width)
    ws.row_dimensions[1].height = 24
    return len(lines) + 1


def sheet_meta(occurrence, trainer_name: str | None, site_names: list[str]) -> dict[str, Any]:
    """What the sheet's title rows say about the lesson (in the lesson's zone)."""
    tz = occurrence.session.timezone
    start = occurrence.starts_at.astimezone(zone(tz))
    end = occurrence.ends_at.astimezone(zone(tz))
    return {"title": occurrence.session.title, "date": f"{start:%Y-%m-%d}",
            "time": f"{start:%H:%M}–{end:%H:%M}", "trainer": trainer_name or "",
            "sites": "、".join(site_names)}


def _sheet(wb: Workbook) -> Worksheet:
    """A new workbook's one sheet."""
    ws = wb.active
    assert isinstance(ws, Worksheet)
    return ws


def sheet_xlsx(meta: dict[str, Any], rows: list[Row], default_tz: str) -> bytes:
    """The attendance sheet: title rows, one row per expected member, and a summary per
    site with totals; printable (landscape, one page wide, headers on every page)."""
    wb = Workbook()
    ws = _sheet(wb)
    ws.title = "考勤明细"
    info = (f"日期：{meta['date']}　时间：{meta['time']}　讲师：{meta['trainer'] or '—'}"
            f"　学习点：{meta['sites'] or '—'}")
    head = _title_rows(ws, [f"{meta['title']} 考勤表", info], len(HEADERS))
    _header(ws, HEADERS, [12, 14, 20, 18, 18, 18, 10, 8, 40], row=head)
    for row in rows:
        xlsx_append(ws, _values(row, default_tz))
        r = ws.max_row
        for col in (5, 6):
            ws.cell(row=r, column=col).number_format = "yyyy-mm-dd hh:mm"
        ws.cell(row=r, column=9).alignment = Alignment(wrap_text=True, vertical="top")
    _print_setup(ws)
    summary = wb.create_sheet("学习点汇总")
    labels = [STATUS_LABELS[s] for s in ("present", "late", "left_early", "absent", "excused")]
    head = _title_rows(summary, [f"{meta['title']} 学习点汇总", info], 9)
    _header(summary, ["学习点", "应到", "实到", *labels, "出勤率"],
            [20, 8, 8, 8, 8, 8, 8, 8, 10], row=head)
    per_site: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts = per_site[row.site.name if row.site else "个人在线/其他"]
        counts["expected"] += 1 if row.expected else 0
        counts[row.record.status] += 1
    total: dict[str, int] = defaultdict(int)
    for name, c in [*per_site.items(), ("合计", None)]:
        if c is None:
            c = total
        else:
            for k, v in c.items():
                total[k] += v
        came = c["present"] + c["late"] + c["left_early"]
        due = c["expected"] - c["excused"]
        xlsx_append(summary, [name, c["expected"], came, c["present"], c["late"],
                              c["left_early"], c["absent"], c["excused"],
                              round(came / due, 4) if due > 0 else None])
        summary.cell(row=summary.max_row, column=9).number_format = "0.0%"
    for cell in summary[summary.max_row]:
        cell.font = HEADER_FONT
    _print_setup(summary)
    wb.properties.title = strip_control(meta["title"])
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


def _rate_cell(ws, value: float | None) -> None:
    ws.cell(row=ws.max_row, column=ws.max_column).number_format = "0.0%"


def report_xlsx(data: dict[str, Any], *, scope: str, period: str) -> bytes:
    """The attendance report: per branch with a total, and per member grouped by branch
    with a subtotal row under each branch; printable like the sheets."""
    from attendance.service import rate

    wb = Workbook()
    ws = _sheet(wb)
    ws.title = "按支部"
    lines = [f"{scope} 考勤统计", f"统计期间：{period}　学习活动 {len(data['occurrences'])} 次"
             "　出勤率 = 实到 ÷（应到 − 请假）"]
    head = _title_rows(ws, lines, 6)
    _header(ws, ["支部", "人数", "应到", "实到", "请假", "出勤率"], [24, 8, 8, 8, 8, 10],
            row=head)
    total = {"members": 0, "expected": 0, "attended": 0, "excused": 0}
    for b in data["branches"]:
        xlsx_append(ws, [b["unit"].name if b["unit"] else "", b["members"], b["expected"],
                         b["attended"], b["excused"], b["rate"]])
        _rate_cell(ws, b["rate"])
        for k in total:
            total[k] += b[k]
    xlsx_append(ws, ["合计", total["members"], total["expected"], total["attended"],
                     total["excused"], rate(total["attended"], total["expected"],
                                            total["excused"])])
    _rate_cell(ws, None)
    for cell in ws[ws.max_row]:
        cell.font = HEADER_FONT
    _print_setup(ws)

    ms = wb.create_sheet("按党员")
    head = _title_rows(ms, lines, 9)
    _header(ms, ["所在支部", "姓名", "党员编号", "应到", "实到", "请假", "缺席", "时长(分钟)",
                 "出勤率"], [22, 12, 14, 8, 8, 8, 8, 12, 10], row=head)
    by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in data["members"]:
        by_unit[m["unit"].name if m["unit"] else ""].append(m)
    for unit_name, members in by_unit.items():
        sub = {"expected": 0, "attended": 0, "excused": 0, "absent": 0, "minutes": 0.0}
        for m in members:
            xlsx_append(ms, [unit_name, m["member"].name, m["member"].member_no,
                             m["expected"], m["attended"], m["excused"], m["absent"],
                             round(m["minutes"], 1), m["rate"]])
            _rate_cell(ms, m["rate"])
            for k in sub:
                sub[k] += m[k]
        xlsx_append(ms, [f"{unit_name} 小计", f"{len(members)} 人", "", sub["expected"],
                         sub["attended"], sub["excused"], sub["absent"],
                         round(sub["minutes"], 1),
                         rate(sub["attended"], sub["expected"], sub["excused"])])
        _rate_cell(ms, None)
        for cell in ms[ms.max_row]:
            cell.font, cell.fill = HEADER_FONT, SUBTOTAL_FILL
    _print_setup(ms)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def ledger_xlsx(ledger: dict[str, Any]) -> bytes:
    """学时台账: annual hours per member against the requirement."""
    wb = Workbook()
    ws = _sheet(wb)
    ws.title = f"{ledger['year']}年学时台账"
    _header(ws, ["姓名", "党员编号", "所在支部", "现场/在线学时", "补学学时", "合计学时",
                 "年度要求", "差额", "是否达标"], [12, 14, 20, 14, 10, 10, 10, 8, 10])
    for r in ledger["rows"]:
        xlsx_append(ws, [r["member"].name, r["member"].member_no,
                   r["unit"].name if r["unit"] else "", r["live_hours"], r["makeup_hours"],
                   r["total_hours"], ledger["required"], r["shortfall"],
                   "未达标" if r["short"] else "达标"])
    _print_setup(ws)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
