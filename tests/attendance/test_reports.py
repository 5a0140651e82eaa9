"""Reports and the ledger: per member and per branch, exports with presets
(attendance/reports.py)."""

from __future__ import annotations

import datetime as dt

from attendance import service as svc
from config import settings
from tests.attendance.conftest import login


def test_report_and_ledger(db_session, scene, app):
    occ = scene.occurrence
    now = occ.ends_at + dt.timedelta(minutes=1)
    svc.record_event(db_session, occurrence=occ, type="check_in", source="t", event_id="1",
                     now=occ.starts_at, member_id=scene.members[0].id, site_id=scene.site_a.id)
    data = svc.report(db_session, unit_id=scene.unit.id, unit_ids=None,
                      start=occ.starts_at - dt.timedelta(days=1),
                      end=occ.starts_at + dt.timedelta(days=1), config=settings(app), now=now)
    per_member = {r["member"].id: r for r in data["members"]}
    assert per_member[scene.members[0].id]["rate"] == 1.0
    assert per_member[scene.members[1].id]["rate"] == 0.0
    assert data["branches"][0]["rate"] == 0.25
    ledger = svc.ledger(db_session, year=occ.starts_at.year, unit_ids=[scene.unit.id],
                        config=settings(app), now=now, tz="UTC")
    hours = {r["member"].id: r for r in ledger["rows"]}
    assert hours[scene.members[0].id]["live_hours"] == 1.0
    assert hours[scene.members[0].id]["short"] is True
    assert ledger["required"] == 32
    assert ledger["short_count"] == 4


def test_reports_export_xlsx_with_presets_and_branch_subtotals(client, scene):
    import io

    import openpyxl

    login(client, "organizer")
    page = client.get("/attendance/reports?preset=year").get_data(as_text=True)
    assert "本季度" in page
    assert client.get("/attendance/reports?preset=decade").status_code == 422
    r = client.get("/attendance/reports?preset=year&format=xlsx")
    assert r.status_code == 200
    assert "filename*=UTF-8''" in r.headers["Content-Disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.data))
    branches = list(wb["按支部"].values)
    assert branches[0][0].endswith("考勤统计")
    assert branches[2][:2] == ("支部", "人数")
    assert branches[-1][0] == "合计"
    members = list(wb["按党员"].values)
    subtotals = [row for row in members if isinstance(row[0], str) and row[0].endswith("小计")]
    assert subtotals
    assert wb["按党员"].page_setup.orientation == "landscape"
