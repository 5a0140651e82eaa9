"""Recurrence rules in words (the lists and the detail page show these, not RRULEs)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from sessions.recurrence import describe

SH = ZoneInfo("Asia/Shanghai")
#: Wednesday 2026-12-02 19:30 in Shanghai.
START = dt.datetime(2026, 12, 2, 11, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("rule", "zh", "en"), [
    ("FREQ=WEEKLY;BYDAY=WE", "每周三 19:30", "Every Wed at 19:30"),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE", "每 2 周的周一、周三 19:30",
     "Every 2 weeks on Mon, Wed at 19:30"),
    ("FREQ=MONTHLY;BYDAY=1FR", "每月第一个周五 19:30", "Monthly on the First Fri at 19:30"),
    ("FREQ=MONTHLY;BYMONTHDAY=15;COUNT=6", "每月 15 日 19:30，共 6 次",
     "Monthly on day 15 at 19:30, 6 times"),
    ("FREQ=DAILY;UNTIL=20261231T155959Z", "每天 19:30，至 2026-12-31",
     "Daily at 19:30, until 2026-12-31"),
    (None, "不重复（2026-12-02 19:30）", "Once (2026-12-02 19:30)"),
    ("FREQ=YEARLY;BYMONTH=7", "FREQ=YEARLY;BYMONTH=7", "FREQ=YEARLY;BYMONTH=7"),
])
def test_rules_in_words_in_both_languages(app, rule, zh, en):
    with app.test_request_context("/"):
        assert describe(rule, START, SH) == zh
    with app.test_request_context("/?lang=en"):
        from flask_babel import force_locale

        with force_locale("en"):
            assert describe(rule, START, SH) == en
