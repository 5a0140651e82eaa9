"""The attendance API contract: posting events (201, a repeat 200), bad bodies, the event log,
exports, the OpenAPI document (each rule module's tests are in its test_<module>.py)."""

from __future__ import annotations

import datetime as dt
import io

import openpyxl
import pytest

from tests.attendance.conftest import EARLY, body, events_url, stored


def test_post_event_201_then_repeat_200_with_the_stored_event(client, scene, db_session):
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers("operator_a"))
    assert r.status_code == 201, r.json
    first = r.json
    assert (first["event_id"], first["type"], first["source"]) == (
        "e1", "check_in", f"api:user:{scene.users['operator_a'].id}")
    # the repeat is recognised first: even with a different body
    r = client.post(events_url(scene), json={"event_id": "e1", "type": "bogus"},
                    headers=scene.headers("operator_a"))
    assert r.status_code == 200
    assert r.json["id"] == first["id"]
    assert stored(db_session) == 1


def test_repeat_is_recognised_even_after_the_occurrence_is_locked(client, scene, db_session):
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("screen_a")).status_code == 201
    assert client.post(f"/api/v1/occurrences/{scene.occurrence.id}/lock", json=EARLY,
                       headers=scene.headers("organizer")).status_code == 200
    r = client.post(events_url(scene), json=body(scene), headers=scene.headers("screen_a"))
    assert r.status_code == 200
    r = client.post(events_url(scene), json=body(scene, member=1, event_id="e2"),
                    headers=scene.headers("screen_a"))
    assert r.status_code == 409
    assert r.json["error"] == "occurrence_locked"


def test_check_in_at_another_site_is_409_and_not_stored(client, scene, db_session):
    assert client.post(events_url(scene), json=body(scene),
                       headers=scene.headers("admin")).status_code == 201
    r = client.post(events_url(scene), json=body(scene, site=scene.site_b, event_id="e2"),
                    headers=scene.headers("admin"))
    assert r.status_code == 409
    assert r.json["error"] == "checked_in_elsewhere"
    assert r.json["details"]["site_id"] == scene.site_a.id
    assert stored(db_session) == 1
    # after a check-out the member may check in elsewhere
    assert client.post(events_url(scene), json=body(scene, event_id="e3", type_="check_out"),
                       headers=scene.headers("admin")).status_code == 201
    assert client.post(events_url(scene), json=body(scene, site=scene.site_b, event_id="e4"),
                       headers=scene.headers("admin")).status_code == 201


@pytest.mark.parametrize(("field", "value"), [
    ("type", "viewer_join"), ("member_id", "x"), ("at", "yesterday"),
    ("at", "2024-07-01T10:00:00"),  # naive
])
def test_bad_body_is_422_naming_the_field(client, scene, db_session, field, value):
    r = client.post(events_url(scene), json=body(scene, **{field: value}),
                    headers=scene.headers("admin"))
    assert r.status_code == 422
    assert r.json["details"]["field"] == field
    assert stored(db_session) == 0


def test_missing_event_id_or_json_is_422(client, scene):
    r = client.post(events_url(scene), json={"type": "check_in"}, headers=scene.headers("admin"))
    assert (r.status_code, r.json["details"]["field"]) == (422, "event_id")
    r = client.post(events_url(scene), data="nope", headers=scene.headers("admin"))
    assert r.status_code == 422


def test_event_log_lists_event_ids(client, scene):
    for i in range(3):
        client.post(events_url(scene), json=body(scene, member=i % 2, event_id=f"k{i}",
                                                 type_="check_in" if i < 2 else "check_out"),
                    headers=scene.headers("screen_a"))
    r = client.get(events_url(scene), headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert [e["event_id"] for e in r.json] == ["k0", "k1", "k2"]
    assert "X-Pagination" in r.headers
    assert client.get(events_url(scene), headers=scene.headers("member0")).status_code == 403


def test_xlsx_and_csv_exports(client, scene):
    client.post(events_url(scene), json=body(scene), headers=scene.headers("screen_a"))
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.xlsx",
                   headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert r.mimetype.endswith("spreadsheetml.sheet")
    from urllib.parse import quote

    disposition = r.headers["Content-Disposition"]
    local = scene.occurrence.starts_at.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert f"filename*=UTF-8''{quote(f'党史学习-{local:%Y-%m-%d}-考勤.xlsx')}" in disposition
    assert 'filename="' in disposition  # an ASCII fallback for old clients
    wb = openpyxl.load_workbook(io.BytesIO(r.data))
    ws = wb["考勤明细"]
    rows = list(ws.values)
    # a title row, the lesson's facts, then the headers (repeated on every printed page)
    assert rows[0][0] == "党史学习 考勤表"
    assert rows[1][0].startswith(f"日期：{local:%Y-%m-%d}")
    assert "讲师：trainer" in rows[1][0]
    assert "一号会议室、二号会议室" in rows[1][0]
    assert rows[2] == ("姓名", "党员编号", "所在支部", "学习点", "首次签到", "最后签退",
                       "时长(分钟)", "状态", "备注")
    assert ws.print_title_rows == "$3:$3"
    assert ws.page_setup.orientation == "landscape"
    assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0)
    assert ws.sheet_properties.pageSetUpPr.fitToPage is True
    rows = rows[2:]
    assert len(rows) == 5
    zhang = next(r for r in rows if r[0] == "张三")
    assert zhang[3] == "一号会议室"
    assert isinstance(zhang[4], dt.datetime)  # a real Excel datetime, in Beijing time
    expected_local = scene.occurrence.starts_at  # checked in after the start
    assert zhang[4] > expected_local.astimezone(dt.timezone(dt.timedelta(hours=8))).replace(
        tzinfo=None)
    assert zhang[7] == "出席"
    assert "学习点汇总" in wb.sheetnames
    totals = list(wb["学习点汇总"].values)[-1]
    assert totals[:3] == ("合计", 4, 1)
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.csv",
                   headers=scene.headers("organizer"))
    assert r.status_code == 200
    assert r.data.startswith(b"\xef\xbb\xbf")
    text = r.data.decode("utf-8-sig")
    header = "姓名,党员编号,所在支部,学习点,首次签到,最后签退,时长(分钟),状态,备注"
    assert text.splitlines()[0] == header
    assert len(text.strip().splitlines()) == 5


def test_openapi_documents_the_contract(client):
    spec = client.get("/api/openapi.json").json
    post = spec["paths"]["/api/v1/occurrences/{occurrence_id}/attendance-events"]["post"]
    assert {"200", "201"} <= set(post["responses"])


def test_exports_read_back_by_a_second_reader(client, scene):
    """python-calamine (Rust's calamine, as WPS-like readers parse) reads the same sheets
    openpyxl wrote: titles, headers, hostile names as text, the summary."""
    from python_calamine import CalamineWorkbook

    body_ = body(scene)
    client.post(events_url(scene), json=body_, headers=scene.headers("screen_a"))
    r = client.get(f"/api/v1/occurrences/{scene.occurrence.id}/attendance.xlsx",
                   headers=scene.headers("organizer"))
    book = CalamineWorkbook.from_filelike(io.BytesIO(r.data))
    assert book.sheet_names == ["考勤明细", "学习点汇总"]
    rows = book.get_sheet_by_name("考勤明细").to_python()
    assert rows[0][0] == "党史学习 考勤表"
    assert rows[2][:2] == ["姓名", "党员编号"]
    assert {row[0] for row in rows[3:]} == {"张三", "李四", "王五", "赵六"}
    summary = book.get_sheet_by_name("学习点汇总").to_python()
    assert summary[-1][0] == "合计"
