"""Calendar benchmark: feed generation (cold and warm), the 304 path, and listing 10,000
occurrences through the API, each next to a baseline measured in the same run.

    .venv/bin/python bench/calendar.py [--runs 30]

It builds an app on a temporary SQLite database (no migrations, create_all): one site
with five weekly series over five years (about 1,300 occurrences) and fifty one-off
sessions, plus a second site with daily series so that more than 10,000 occurrences exist.
Requests go through Flask's test client (the whole app stack, no network).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's `calendar`, which `email` (imported by
# Flask) needs: take bench/ off the path, and put the project root on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from app import create_app  # noqa: E402
from core.principals import SYSTEM  # noqa: E402
from extensions import db  # noqa: E402

SH = ZoneInfo("Asia/Shanghai")


def timed(fn, runs: int) -> list[float]:
    """Milliseconds per call of `fn`, `runs` times."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def build(app, now: dt.datetime) -> dict:
    """The data set; returns ids and a token."""
    from accounts.models import User
    from accounts.service import issue_token
    from org.models import OrgUnit, Site
    from sessions.service import create_session

    s = db.session
    unit = OrgUnit(name="党委", kind="committee", path="/")
    s.add(unit)
    s.flush()
    unit.path = f"/{unit.id}/"
    site = Site(name="一号会议室", org_unit_id=unit.id, timezone="Asia/Shanghai")
    busy = Site(name="二号会议室", org_unit_id=unit.id, timezone="Asia/Shanghai")
    empty = Site(name="空会议室", org_unit_id=unit.id, timezone="Asia/Shanghai")
    s.add_all([site, busy, empty])
    admin = User(username="admin", password_hash="!", role="admin", display_name="admin")
    s.add(admin)
    s.flush()
    token = issue_token(s, admin)
    start = now - dt.timedelta(days=round(4.5 * 365))
    base = start.astimezone(SH).date()
    for n, day in enumerate(("MO", "TU", "WE", "TH", "FR")):
        create_session(s, SYSTEM, {
            "title": f"每周学习 {day}", "kind": "party_history_lecture",
            "starts_at": dt.datetime.combine(base, dt.time(19, 30), SH), "duration_minutes": 90,
            "timezone": "Asia/Shanghai", "rrule": f"FREQ=WEEKLY;BYDAY={day}",
            "site_ids": [site.id], "org_unit_ids": [], "description": f"第 {n + 1} 组",
        }, now=now)
    for i in range(50):
        day = (now + dt.timedelta(days=7 * i - 100)).astimezone(SH).date()
        day += dt.timedelta(days=(5 - day.weekday()) % 7)  # a Saturday
        create_session(s, SYSTEM, {
            "title": f"专题会议 {i + 1}", "kind": "general_meeting",
            "starts_at": dt.datetime.combine(day, dt.time(9, 0), SH), "duration_minutes": 120,
            "timezone": "Asia/Shanghai", "site_ids": [site.id], "org_unit_ids": [],
        }, now=now)
    daily_start = now - dt.timedelta(days=2200)
    for hour in (7, 10, 13, 16):
        create_session(s, SYSTEM, {
            "title": f"每日学习 {hour} 点", "kind": "group_meeting",
            "starts_at": dt.datetime.combine(daily_start.astimezone(SH).date(),
                                             dt.time(hour, 0), SH),
            "duration_minutes": 60, "timezone": "Asia/Shanghai", "rrule": "FREQ=DAILY",
            "site_ids": [busy.id], "org_unit_ids": [],
        }, now=now)
    s.commit()
    return {"site": site.id, "empty": empty.id, "token": token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from sqlalchemy import func, select

    from core.types import utcnow
    from sessions import ical, service
    from sessions.models import Occurrence, StudySession

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
            "YUANJIAO_AUTO_MIGRATE": False, "YUANJIAO_DEMO": False, "YUANJIAO_MEDIA": "off",
            "SECRET_KEY": "bench", "SERVER_NAME": "bench.local",
        })
        with app.app_context():
            db.create_all()
            t0 = time.perf_counter()
            ids = build(app, utcnow())
            built = time.perf_counter() - t0
            total = db.session.scalar(select(func.count()).select_from(Occurrence))
            in_feed = select(StudySession.id).where(
                service.feed_sessions_filter(db.session, "site", ids["site"]))
            site_occ = db.session.scalar(select(func.count()).select_from(Occurrence)
                                         .where(Occurrence.session_id.in_(in_feed)))
            db.session.remove()

        client = app.test_client()
        auth = {"Authorization": f"Bearer {ids['token']}"}

        def url(site_id: int) -> str:
            r = client.get(f"/api/v1/sites/{site_id}/calendar-url", headers=auth)
            return r.get_json()["url"].split("bench.local", 1)[1]

        feed, empty_feed = url(ids["site"]), url(ids["empty"])

        def get(path, **kw):
            r = client.get(path, **kw)
            assert r.status_code in (200, 304), (path, r.status_code)
            return r

        def cold():
            service._feed_cache.clear()
            ical.vtimezone.cache_clear()
            get(feed)

        first = get(feed)
        etag = first.headers["ETag"]
        size = len(first.data)
        cold_ms = timed(cold, max(5, args.runs // 3))
        get(feed)
        warm_ms = timed(lambda: get(feed), args.runs)
        not_modified_ms = timed(lambda: get(feed, headers={"If-None-Match": etag}), args.runs)
        empty_ms = timed(lambda: get(empty_feed), args.runs)
        me_ms = timed(lambda: get("/api/v1/users/me", headers=auth), args.runs)
        listed = get("/api/v1/occurrences?page_size=10000", headers=auth)
        assert len(listed.get_json()) == 10000
        list_ms = timed(lambda: get("/api/v1/occurrences?page_size=10000", headers=auth),
                        max(5, args.runs // 6))

    rows = [
        ("feed, cold (render)", cold_ms, empty_ms, "empty feed"),
        ("feed, warm (cached)", warm_ms, empty_ms, "empty feed"),
        ("feed, 304 If-None-Match", not_modified_ms, empty_ms, "empty feed"),
        ("list 10,000 occurrences", list_ms, me_ms, "GET /users/me"),
    ]
    print(f"data: {total} occurrences in all; the feed's site has {site_occ} "
          f"(5 weekly series over ~5 years + 50 one-offs); feed {size / 1024:.0f} kB; "
          f"built in {built:.1f} s")
    print(f"{'measure':28} {'median ms':>10} {'p95 ms':>8} {'baseline':>14} {'base ms':>8} "
          f"{'ratio':>7}")
    for name, samples, base, base_name in rows:
        med, p95 = summary(samples)
        bmed, _ = summary(base)
        print(f"{name:28} {med:10.1f} {p95:8.1f} {base_name:>14} {bmed:8.2f} {med / bmed:7.1f}x")
    warm_med, _ = summary(warm_ms)
    print(f"goal: warm feed under 100 ms -> {'met' if warm_med < 100 else 'NOT met'} "
          f"({warm_med:.1f} ms)")


if __name__ == "__main__":
    main()
