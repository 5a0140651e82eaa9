"""Issue 2's contract, end to end against the real server as other tools call it."""

from __future__ import annotations

import datetime as dt

import icalendar
import pytest
import recurring_ical_events
import requests


@pytest.mark.live
def test_contract_end_to_end(live_server_factory):
    server = live_server_factory({"YUANJIAO_MEDIA": "off"})
    token = server.token("admin", "admin-password")

    def call(method, path, expect, **kw):
        r = server.api(method, path, token, **kw)
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r.json() if r.content and "json" in r.headers.get("Content-Type", "") else r

    committee = call("POST", "/api/v1/org-units", 201,
                     json={"name": "党委", "kind": "committee", "parent_id": None})
    branch = call("POST", "/api/v1/org-units", 201,
                  json={"name": "第一支部", "kind": "branch", "parent_id": committee["id"]})
    site = call("POST", "/api/v1/sites", 201, json={
        "name": "一工区会议室", "org_unit_id": branch["id"], "timezone": "Asia/Shanghai"})
    trainer = call("POST", "/api/v1/users", 201, json={
        "username": "lecturer", "password": "podium-pass-2026", "role": "trainer",
        "display_name": "李老师"})
    member = call("POST", "/api/v1/members", 201, json={
        "name": "王建国", "member_no": "DY0001", "org_unit_id": branch["id"],
        "home_site_id": site["id"], "category": "full"})
    call("POST", "/api/v1/users", 201, json={
        "username": "wang", "password": "member-pass", "role": "member",
        "display_name": "王建国", "member_id": member["id"]})
    call("POST", "/api/v1/users", 201, json={
        "username": "org1", "password": "organizer-pass", "role": "organizer",
        "display_name": "组织员", "org_unit_id": branch["id"]})
    call("POST", "/api/v1/users", 201, json={
        "username": "op1", "password": "operator-pass", "role": "site_operator",
        "display_name": "管理员", "site_id": site["id"]})

    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    start_local = start.astimezone(dt.timezone(dt.timedelta(hours=8)))
    session = call("POST", "/api/v1/sessions", 201, json={
        "title": "党史学习", "kind": "party_history_lecture", "trainer_id": trainer["id"],
        "starts_at": start_local.isoformat(), "duration_minutes": 90,
        "timezone": "Asia/Shanghai", "rrule": "FREQ=WEEKLY;COUNT=4",
        "exdates": [(start_local + dt.timedelta(weeks=2)).isoformat()],
        "site_ids": [site["id"]], "org_unit_ids": [branch["id"]]})
    occurrences = call("GET", f"/api/v1/sessions/{session['id']}/occurrences", 200)
    assert [o["status"] for o in occurrences] == ["scheduled"] * 3
    for occ in occurrences:
        assert dt.datetime.fromisoformat(occ["starts_at"]).utcoffset() is not None
    first, second = occurrences[0], occurrences[1]

    # A clash at the same site is refused, naming the occurrence.
    clash = server.api("POST", "/api/v1/sessions", token, json={
        "title": "支部大会", "kind": "general_meeting", "trainer_id": trainer["id"],
        "starts_at": (start_local + dt.timedelta(minutes=30)).isoformat(),
        "duration_minutes": 60, "timezone": "Asia/Shanghai", "site_ids": [site["id"]],
        "org_unit_ids": [branch["id"]]})
    assert clash.status_code == 409
    assert str(first["id"]) in clash.text or "党史学习" in clash.json()["message"]

    # Bad input names the field, never a 500.
    bad = server.api("POST", "/api/v1/sessions", token, json={
        "title": "x", "kind": "party_lesson", "trainer_id": trainer["id"],
        "starts_at": "not-a-date", "duration_minutes": 60, "timezone": "Asia/Shanghai",
        "site_ids": [site["id"]], "org_unit_ids": []})
    assert bad.status_code in (400, 422)
    assert "starts_at" in bad.text

    moved_to = dt.datetime.fromisoformat(second["starts_at"]) + dt.timedelta(hours=2)
    moved = call("PATCH", f"/api/v1/occurrences/{second['id']}", 200,
                 json={"starts_at": moved_to.isoformat()})
    assert moved["id"] == second["id"]
    call("PATCH", f"/api/v1/occurrences/{first['id']}", 200, json={"status": "cancelled"})
    after = call("GET", f"/api/v1/sessions/{session['id']}/occurrences", 200)
    by_id = {o["id"]: o for o in after}
    assert by_id[first["id"]]["status"] == "cancelled"
    assert dt.datetime.fromisoformat(by_id[second["id"]]["starts_at"]) == moved_to

    # The site's feed, fetched without login, expands to exactly the live occurrences.
    url = call("GET", f"/api/v1/sites/{site['id']}/calendar-url", 200)["url"]
    feed = requests.get(url, timeout=10)
    assert feed.status_code == 200
    assert feed.headers["Content-Type"].startswith("text/calendar")
    cal = icalendar.Calendar.from_ical(feed.content)
    window = (start - dt.timedelta(days=1), start + dt.timedelta(weeks=6))
    starts = sorted(e["DTSTART"].dt.astimezone(dt.UTC)
                    for e in recurring_ical_events.of(cal).between(*window)
                    if str(e.get("STATUS", "")).upper() != "CANCELLED")
    expected = sorted(dt.datetime.fromisoformat(o["starts_at"]).astimezone(dt.UTC)
                      for o in after if o["status"] != "cancelled")
    assert starts == expected
    etag = feed.headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert call("GET", f"/api/v1/members/{member['id']}/calendar-url", 200)["url"].startswith(
        "http")

    # Import an Outlook-style file.
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Microsoft Corporation//Outlook 16.0//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:China Standard Time\r\nBEGIN:STANDARD\r\n"
        "DTSTART:16010101T000000\r\nTZOFFSETFROM:+0800\r\nTZOFFSETTO:+0800\r\n"
        "END:STANDARD\r\nEND:VTIMEZONE\r\n"
        "BEGIN:VEVENT\r\nUID:outlook-1\r\nSUMMARY:党课\r\n"
        "DTSTART;TZID=China Standard Time:20270105T150000\r\n"
        "DTEND;TZID=China Standard Time:20270105T163000\r\n"
        "RRULE:FREQ=MONTHLY;COUNT=3\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    imported = server.api("POST", "/api/v1/sessions/import", token,
                          files={"file": ("lesson.ics", ics.encode(), "text/calendar")},
                          data={"site_ids": str(site["id"]), "org_unit_ids": str(branch["id"]),
                                "trainer_id": str(trainer["id"])})
    assert imported.status_code == 201, imported.text
    new_id = imported.json()["ids"][0]
    occ = call("GET", f"/api/v1/sessions/{new_id}/occurrences", 200)
    assert len(occ) == 3
    assert dt.datetime.fromisoformat(occ[0]["starts_at"]) == dt.datetime(
        2027, 1, 5, 7, 0, tzinfo=dt.UTC)
    broken = server.api("POST", "/api/v1/sessions/import", token,
                        files={"file": ("x.ics", b"BEGIN:VCALENDAR\r\nnonsense", "text/calendar")},
                        data={"site_ids": str(site["id"]), "org_unit_ids": str(branch["id"])})
    assert broken.status_code in (400, 422)
    assert broken.json()["message"]

    # The browser login lands on the dashboard.
    s = requests.Session()
    page = s.get(server.url + "/login", timeout=10).text
    csrf = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    r = s.post(server.url + "/login", data={"username": "admin", "password": "admin-password",
                                            "csrf_token": csrf}, timeout=10)
    assert r.status_code == 200
    assert r.url.rstrip("/") == server.url
