"""Every link shown to a role works for that role: a crawl of the demo data, per demo login.

A real server (`python app.py`) with the demo organization; each role logs in through the
form, and every same-origin link reachable from 工作台 (two clicks deep) must answer
without a 4xx or 5xx.
"""

from __future__ import annotations

import re
from collections import deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
import requests

pytestmark = [pytest.mark.live, pytest.mark.slow]

DEMO_PASSWORD = "yuanjiao-demo"
ROLES = ("trainer", "organizer", "site1", "member1")
#: Links that are not pages to visit: leaving, switching the language (which changes the
#: session for the rest of the crawl), and the API's machine-readable spec.
SKIP = re.compile(r"(/logout\b|[?&]lang=)")
DEPTH = 2


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.csrf: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"] or "")
        if tag == "input" and a.get("name") == "csrf_token":
            self.csrf = a.get("value")


def _parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def login(base: str, username: str) -> requests.Session:
    http = requests.Session()
    form = _parse(http.get(base + "/login", timeout=10).text)
    response = http.post(base + "/login", timeout=10, data={
        "username": username, "password": DEMO_PASSWORD, "csrf_token": form.csrf or ""})
    assert response.ok, (username, response.status_code)
    assert "/login" not in response.url, username
    return http


def crawl(base: str, http: requests.Session) -> tuple[dict[str, int], dict[str, str]]:
    """Status per visited URL, and the page each URL was found on."""
    origin = urlsplit(base).netloc
    status: dict[str, int] = {}
    found_on: dict[str, str] = {}
    queue = deque([(base + "/", 0, "(start)")])
    while queue:
        url, depth, parent = queue.popleft()
        if url in status:
            continue
        response = http.get(url, timeout=30, allow_redirects=True)
        status[url] = response.status_code
        found_on[url] = parent
        html = "text/html" in response.headers.get("Content-Type", "")
        if depth >= DEPTH or not html or response.status_code >= 400:
            continue
        for href in _parse(response.text).hrefs:
            target = urldefrag(urljoin(response.url, href))[0]
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or parts.netloc != origin:
                continue
            if SKIP.search(target) or target in status:
                continue
            queue.append((target, depth + 1, url))
    return status, found_on


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from tests.conftest import LiveServer

    server = LiveServer(tmp_path_factory.mktemp("links"), {
        "YUANJIAO_DEMO": "1", "YUANJIAO_MEDIA": "off"}).start()
    yield server
    server.stop()


@pytest.mark.parametrize("username", ROLES)
def test_every_link_shown_to_a_demo_role_answers(demo_server, username):
    http = login(demo_server.url, username)
    status, found_on = crawl(demo_server.url, http)
    broken = {url: (code, found_on[url]) for url, code in status.items() if code >= 400}
    assert len(status) > 5, status  # the crawl did reach the pages behind 工作台
    assert not broken, broken
