"""User data written into spreadsheets as text, never as formulas (OWASP's CSV injection rule).

Names and notes come from imports and forms: a name such as ``=HYPERLINK(...)`` must not
become a live formula in the xlsx, nor in Excel or WPS opening the csv; and a control
character in one name must not make the whole export fail (openpyxl refuses them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: What spreadsheet programs read as the start of a formula (OWASP: =, +, -, @, tab, CR).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Characters XML 1.0 cannot hold (openpyxl raises on them); tab, LF and CR stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_control(text: str) -> str:
    """`text` without control characters (tab, line feed and carriage return kept)."""
    return _CONTROL.sub("", text)


def csv_cell(value: Any) -> Any:
    """A csv cell: strings without control characters, and a leading ' before what a
    spreadsheet would take for a formula. Numbers and dates pass unchanged."""
    if not isinstance(value, str):
        return value
    text = strip_control(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_row(values: Iterable[Any]) -> list[Any]:
    return [csv_cell(v) for v in values]


def xlsx_append(ws: Any, values: Iterable[Any]) -> None:
    """Append a row to an openpyxl worksheet; every string cell is text, never a formula."""
    ws.append([strip_control(v) if isinstance(v, str) else v for v in values])
    for cell in ws[ws.max_row]:
        if cell.data_type == "f":  # openpyxl reads a leading "=" as a formula
            cell.data_type = "s"
