"""The English interface: every page an admin sees renders in both languages, and the
English catalogue is complete.

Chinese is the source language (the msgids); English comes from
translations/en/LC_MESSAGES/messages.po, compiled by `make translations`.
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from babel.messages.pofile import read_po

from core.types import utcnow

ROOT = Path(__file__).resolve().parent.parent
PO_FILE = ROOT / "translations" / "en" / "LC_MESSAGES" / "messages.po"
MO_FILE = PO_FILE.with_suffix(".mo")

#: Ideographs, CJK punctuation and full-width forms: none may be left in English chrome.
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")

#: Elements whose text is interface chrome (navigation, headings, column headers, buttons).
CHROME_TAGS = ("title", "nav", "h1", "h2", "h3", "th", "button")

#: Names of the rows this test creates: data, shown as entered in either language.
DATA = ("远教党委", "第一支部", "一号会议室", "张三", "党史学习：长征精神", "Asia/Shanghai")

ADMIN_PASSWORD = "password123"


class _ChromeText(HTMLParser):
    """Collects the text inside CHROME_TAGS and the `lang` of <html>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang")
        if tag in CHROME_TAGS:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in CHROME_TAGS and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def chrome(html: str) -> tuple[str | None, str]:
    """(lang of the page, text of its navigation, headings, column headers and buttons)."""
    parser = _ChromeText()
    parser.feed(html)
    parser.close()
    return parser.lang, " ".join(" ".join(parser.parts).split())


def leftover_cjk(text: str) -> list[str]:
    """CJK runs left in `text` once the names of the test's own rows are taken out."""
    for name in DATA:
        text = text.replace(name, " ")
    return re.findall(CJK.pattern + "+", text)


@pytest.fixture
def world(app, db_session, factory, client):
    """A committee with one branch, site, member and study session; an admin logged in."""
    from sessions import service as sessions_service

    committee = factory.org_unit("远教党委", kind="committee")
    branch = factory.org_unit("第一支部", parent=committee)
    site = factory.site(branch, "一号会议室")
    member = factory.member(branch, site, name="张三")
    admin = factory.user("admin", username="i18n-admin", password=ADMIN_PASSWORD)
    db_session.commit()
    now = utcnow().replace(microsecond=0)
    study = sessions_service.create_session(
        db_session,
        admin,
        {
            "title": "党史学习：长征精神",
            "kind": "party_history_lecture",
            "starts_at": now - dt.timedelta(minutes=10),
            "duration_minutes": 90,
            "timezone": "Asia/Shanghai",
            "site_ids": [site.id],
            "org_unit_ids": [branch.id],
        },
        now=now - dt.timedelta(minutes=20),
    )
    db_session.commit()
    occurrence = study.occurrences[0]
    r = client.post("/login", data={"username": "i18n-admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 302, r.data[:300]
    return SimpleNamespace(
        site=site, member=member, branch=branch, study=study, occurrence=occurrence
    )


def _get(client, path: str, lang: str) -> str:
    sep = "&" if "?" in path else "?"
    r = client.get(f"{path}{sep}lang={lang}")
    assert r.status_code == 200, (path, lang, r.status_code, r.data[:300])
    assert r.mimetype == "text/html"
    return r.get_data(as_text=True)


#: (path, Chinese words on the page, English labels on the page). `{site}` etc. are
#: filled from the `world` fixture.
PAGES = [
    ("/", ["工作台", "今日学习", "学习安排"], ["Dashboard", "Today's study", "Study sessions"]),
    ("/sessions", ["学习安排", "按标题搜索"], ["Study sessions", "Search by title", "Trainer"]),
    (
        "/sessions/new",
        ["安排学习", "不重复", "面向的学习点"],
        ["Schedule study", "Does not repeat", "Monthly on a weekday", "Mon", "Sun"],
    ),
    ("/sessions/import", ["导入日历"], ["Import calendar"]),
    (
        "/sessions/{study}",
        ["场次", "考勤规则"],
        ["Occurrences", "Attendance rules", "Download .ics"],
    ),
    ("/sessions/{study}/edit", ["编辑学习安排"], ["Edit study session", "Repeat"]),
    ("/calendar", ["今天", "周一"], ["Today", "Week", "Month", "Mon", "Sun"]),
    ("/calendar?view=month", ["周日"], ["Mon", "Sun"]),
    ("/org", ["组织架构", "新建组织"], ["Organization structure", "New organization"]),
    ("/org/sites", ["学习点", "新建学习点"], ["Study sites", "New study site", "Capacity"]),
    (
        "/org/sites/{site}",
        ["学习点信息", "会议室屏幕"],
        ["Study site details", "Meeting-room screens", "Issue screen token"],
    ),
    ("/org/members", ["党员名册", "添加党员"], ["Member roster", "Add member", "Member number"]),
    ("/org/members/{member}", ["党员名册", "保存"], ["Member roster", "Save", "Category"]),
    ("/org/members/import", ["导入党员", "文件格式"], ["Import members", "File format"]),
    ("/users", ["用户", "新建用户"], ["Users", "New user", "Initial password"]),
    ("/feeds", ["日历订阅", "订阅地址"], ["Calendar feeds", "Feed address"]),
    ("/attendance/reports", ["考勤报表", "出勤率"], ["Attendance reports", "Attendance rate"]),
    (
        "/attendance/ledger",
        ["学时台账", "年度学时要求"],
        ["Study-hours ledger", "Annual study-hours requirement"],
    ),
    (
        "/attendance/{occurrence}",
        ["考勤记录", "请假申请"],
        ["Attendance records", "Leave requests", "Print sign-in sheet"],
    ),
    (
        "/attendance/{occurrence}/sign-in-sheet",
        ["签到表", "本人签名"],
        ["Sign-in sheet", "Signature", "Recorded by"],
    ),
    ("/attendance/{occurrence}/absentees", ["缺勤名单"], ["Absentees"]),
    (
        "/live/{occurrence}/broadcast",
        ["结束直播", "直播数据"],
        ["End broadcast", "Broadcast statistics", "Camera"],
    ),
]


def _fill(path: str, world) -> str:
    return path.format(
        site=world.site.id,
        member=world.member.id,
        study=world.study.id,
        occurrence=world.occurrence.id,
    )


@pytest.mark.parametrize(("path", "chinese", "english"), PAGES, ids=[p[0] for p in PAGES])
def test_page_in_both_languages(client, world, path, chinese, english):
    path = _fill(path, world)

    html_zh = _get(client, path, "zh")
    lang, _text = chrome(html_zh)
    assert lang == "zh-CN"
    for word in chinese:
        assert word in html_zh, (path, word)

    html_en = _get(client, path, "en")
    lang, text = chrome(html_en)
    assert lang == "en"
    for label in english:
        assert label in html_en, (path, label)
    assert leftover_cjk(text) == [], (path, text)


def test_login_page_in_both_languages(client):
    html_zh = _get(client, "/login", "zh")
    assert chrome(html_zh)[0] == "zh-CN"
    assert "登录远教" in html_zh
    assert "用户名" in html_zh

    html_en = _get(client, "/login", "en")
    lang, text = chrome(html_en)
    assert lang == "en"
    for label in ("Log in to Yuanjiao", "Username", "Password", "Log in"):
        assert label in html_en
    assert leftover_cjk(text) == []
    # The switch back to Chinese is the one CJK word an English page must show.
    assert ">中文</a>" in html_en


def test_language_choice_is_kept_in_the_session(client, world):
    """?lang=en once; later pages stay English until ?lang=zh."""
    _get(client, "/", "en")
    r = client.get("/sessions")
    assert chrome(r.get_data(as_text=True))[0] == "en"
    _get(client, "/", "zh")
    r = client.get("/sessions")
    assert chrome(r.get_data(as_text=True))[0] == "zh-CN"


def test_user_locale_en_gets_english_without_asking(client, factory, db_session):
    """A user whose profile says English sees English from the first page after login."""
    user = factory.user("admin", username="english-admin", password=ADMIN_PASSWORD)
    user.locale = "en"
    db_session.commit()
    r = client.post("/login", data={"username": "english-admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 302
    html = client.get("/org").get_data(as_text=True)
    assert chrome(html)[0] == "en"
    assert "Organization structure" in html
    # ?lang= still wins for this request.
    assert chrome(_get(client, "/org", "zh"))[0] == "zh-CN"


def test_english_flash_message(client, world):
    """Python-side messages (flash) are translated too."""
    r = client.post(
        "/org/sites?lang=en",
        data={"name": "Room B", "org_unit_id": world.branch.id, "timezone": "Asia/Shanghai"},
        follow_redirects=True,
    )
    assert r.status_code == 200
    assert "Study site created" in r.get_data(as_text=True)


def test_catalogue_is_complete():
    """Every msgid has an English string, none is fuzzy, none obsolete, placeholders kept."""
    with PO_FILE.open("rb") as f:
        catalog = read_po(f)
    placeholder = re.compile(r"%\(\w+\)s|%%|%s|\{\w*\}")
    messages = [m for m in catalog if m.id]
    assert len(messages) > 300
    assert not catalog.obsolete
    assert [m.id for m in messages if m.fuzzy] == []
    for m in messages:
        # Plural entries (ngettext) hold tuples: (singular, plural) and one string per form.
        ids = m.id if m.pluralizable else (m.id,)
        strings = m.string if m.pluralizable else (m.string,)
        assert all(strings), f"untranslated: {m.id}"
        expected = sorted(placeholder.findall(ids[-1]))
        for string in strings:
            assert sorted(placeholder.findall(string)) == expected, m.id
            # The import's category values are Chinese words the file must contain.
            if m.id != "正式党员、预备党员、入党积极分子、流动党员":
                assert not CJK.search(string), m.id
    assert any(m.pluralizable for m in messages)


def test_catalogue_is_compiled_and_current():
    """`make translations` has been run since the .po last changed (the .mo is git-ignored)."""
    assert MO_FILE.exists(), "run `make translations`"
    assert MO_FILE.stat().st_mtime >= PO_FILE.stat().st_mtime, "run `make translations`"
