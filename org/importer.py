"""Reading a member file (xlsx or csv) into rows of plain strings.

Only the file format lives here: which bytes are a workbook or a text table, which
encoding a csv uses (UTF-8 with or without BOM, UTF-16 as Excel's "Unicode text",
GBK/GB18030 as Excel in China saves csv), and which column is which field. What a row
means (which org unit, whether it is new) is decided in `org.service.import_members`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

from org.errors import UnsupportedFile, ValidationError

log = logging.getLogger(__name__)

#: Fields a member file may carry, and the one-row limit that keeps an import fast.
FIELDS = ("name", "member_no", "org_unit", "site", "category", "phone")
REQUIRED_FIELDS = ("name", "member_no", "org_unit")
MAX_ROWS = 50_000
#: How far down the sheet to look for the header row.
HEADER_SEARCH_ROWS = 10

#: Header text (normalized: stripped, lower case, no spaces or markers) -> field.
HEADER_ALIASES: dict[str, str] = {
    "姓名": "name",
    "name": "name",
    "党员编号": "member_no",
    "编号": "member_no",
    "member_no": "member_no",
    "memberno": "member_no",
    "number": "member_no",
    "所在支部": "org_unit",
    "支部": "org_unit",
    "所在组织": "org_unit",
    "组织": "org_unit",
    "org_unit": "org_unit",
    "org_unit_id": "org_unit",
    "orgunit": "org_unit",
    "branch": "org_unit",
    "学习点": "site",
    "site": "site",
    "site_id": "site",
    "home_site": "site",
    "home_site_id": "site",
    "类别": "category",
    "人员类别": "category",
    "category": "category",
    "手机": "phone",
    "手机号": "phone",
    "手机号码": "phone",
    "电话": "phone",
    "联系电话": "phone",
    "phone": "phone",
    "mobile": "phone",
}

HEADER_LABELS = {
    "name": "姓名",
    "member_no": "党员编号",
    "org_unit": "所在支部",
    "site": "学习点",
    "category": "类别",
    "phone": "手机",
}

XLSX_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # the old binary .xls (and .doc) container
TEXT_EXTENSIONS = ("", ".csv", ".txt", ".tsv")


@dataclass
class MemberTable:
    """The data rows of a member file, each with its line number in the file."""

    format: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def _extension(filename: str) -> str:
    name = (filename or "").lower()
    return name[name.rfind("."):] if "." in name else ""


def _normalize_header(value: Any) -> str:
    text = _cell_text(value).replace("\ufeff", "")
    for mark in ("*", "＊", "(必填)", "（必填）", " ", "\u3000", "-"):
        text = text.replace(mark, "" if mark != "-" else "_")
    return text.lower()


def _cell_text(value: Any) -> str:
    """A cell as the text a person typed: 13800138000 not 13800138000.0, no padding."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value).strip()


def read_member_table(filename: str, content: bytes) -> MemberTable:
    """Parse an uploaded member file; refuses what is neither xlsx nor csv, or is empty."""
    if not content or not content.strip():
        raise ValidationError("文件为空", field="file", code="empty_file")
    ext = _extension(filename)
    if content.startswith(XLSX_MAGIC):
        raw_rows, fmt = _xlsx_rows(content), "xlsx"
    elif content.startswith(OLE_MAGIC):
        raise UnsupportedFile("不支持旧版 .xls 文件，请在 Excel 中另存为 .xlsx 或 .csv",
                              details={"field": "file"})
    elif ext == ".xlsx":
        raise UnsupportedFile("不是有效的 xlsx 文件", details={"field": "file"})
    elif ext in TEXT_EXTENSIONS:
        raw_rows, fmt = _csv_rows(content), "csv"
    else:
        raise UnsupportedFile(f"不支持的文件类型：{ext}，请上传 .xlsx 或 .csv 文件",
                              details={"field": "file"})
    return _table(raw_rows, fmt)


def _xlsx_rows(content: bytes) -> list[tuple[int, list[Any]]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():
            # Workbooks from WPS and other tools lack a default style; openpyxl warns.
            warnings.simplefilter("ignore")
            book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise UnsupportedFile("不是有效的 xlsx 文件", details={"field": "file"}) from exc
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise ValidationError("工作簿中没有工作表", field="file", code="empty_file")
        rows = []
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            rows.append((number, list(values)))
            if number > MAX_ROWS + 50:
                break
        return rows
    finally:
        book.close()


def _decode(content: bytes) -> str:
    """UTF-8 (BOM or not), UTF-16 with BOM, else GB18030 (a superset of GBK)."""
    if content.startswith(b"\xef\xbb\xbf"):
        encodings: tuple[str, ...] = ("utf-8-sig",)
    elif content.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ("utf-16",)
    else:
        if b"\x00" in content:
            raise UnsupportedFile("文件不是文本表格，请上传 .xlsx 或 .csv 文件",
                                  details={"field": "file"})
        encodings = ("utf-8", "gb18030")
    for encoding in encodings:
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnsupportedFile("无法识别文件编码，请保存为 UTF-8 或 GBK 编码的 csv",
                          details={"field": "file"})


def _csv_rows(content: bytes) -> list[tuple[int, list[Any]]]:
    text = _decode(content)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    if delimiter == "," and "," not in first_line and "；" not in first_line \
            and ";" in first_line:
        delimiter = ";"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for values in reader:
            rows.append((reader.line_num, values))
            if len(rows) > MAX_ROWS + 50:
                break
    except csv.Error as exc:
        raise UnsupportedFile(f"csv 格式错误：{exc}", details={"field": "file"}) from exc
    return rows


def _table(raw_rows: list[tuple[int, list[Any]]], fmt: str) -> MemberTable:
    """Find the header (the first non-empty row), map columns, keep non-empty data rows."""
    # The header is the first row naming at least two of our columns, so that a title
    # row above it ("2026 年党员名册", merged across the sheet) is passed over.
    header: list[Any] | None = None
    first_nonempty: int | None = None
    for position, (_number, values) in enumerate(raw_rows[:HEADER_SEARCH_ROWS]):
        if not any(_cell_text(v) for v in values):
            continue
        if first_nonempty is None:
            first_nonempty = position
        if len({HEADER_ALIASES.get(_normalize_header(v)) for v in values} - {None}) >= 2:
            header, start = values, position
            break
    if header is None:
        if first_nonempty is None:
            raise ValidationError("文件中没有数据", field="file", code="empty_file")
        start = first_nonempty
        header = raw_rows[start][1]
    rows = iter(raw_rows[start + 1:])
    mapping: dict[int, str] = {}
    ignored: list[str] = []
    for index, cell in enumerate(header):
        key = HEADER_ALIASES.get(_normalize_header(cell))
        if key is None:
            if _cell_text(cell):
                ignored.append(_cell_text(cell))
            continue
        if key in mapping.values():
            raise ValidationError(f"列“{HEADER_LABELS[key]}”出现了两次", field="file",
                                  details={"column": key})
        mapping[index] = key
    missing = [HEADER_LABELS[f] for f in REQUIRED_FIELDS if f not in mapping.values()]
    if missing:
        raise ValidationError(
            "缺少必需的列：" + "、".join(missing)
            + "（表头可用中文：姓名、党员编号、所在支部、学习点、类别、手机，"
            "或英文：name, member_no, org_unit, site, category, phone）",
            field="file", details={"missing_columns": missing}, code="missing_columns")
    table = MemberTable(format=fmt, columns=[mapping[i] for i in sorted(mapping)],
                        ignored_columns=ignored)
    for number, values in rows:
        record = {key: _cell_text(values[i]) if i < len(values) else ""
                  for i, key in mapping.items()}
        if not any(record.values()):
            continue
        table.rows.append((number, record))
        if len(table.rows) > MAX_ROWS:
            raise ValidationError(f"一次最多导入 {MAX_ROWS} 行", field="file",
                                  code="too_many_rows")
    if not table.rows:
        raise ValidationError("文件中只有表头，没有党员数据", field="file", code="empty_file")
    log.debug("member file: %s, %d rows, columns %s", fmt, len(table.rows), table.columns)
    return table
