"""The allowed arrows between packages (docs/architecture.md), checked on the source.

Every import statement counts, at module level or inside a function: a lazy import is an
arrow too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Bottom to top: a package may import the service modules of those before it only.
LAYERS = ("core", "accounts", "org", "sessions", "video", "attendance")
#: Where the rules live (no HTTP in them: they must not import core.api).
RULE_MODULES = ("service", "targets", "signals", "recurrence", "rules", "reactions", "live",
                "writer", "importer", "ical", "exports", "access", "validation",
                "materialize", "conflicts", "queries", "feeds", "jobs", "principals")


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module named by an import in the file (`from a.b import c` gives a.b, a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = _modules()
EDGES = {name: _imports(path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def _is_models(module: str) -> bool:
    return module.split(".")[1:2] == ["models"]


def test_the_scan_sees_the_known_arrows():
    """The checks below would see a violation: the scanner finds real edges."""
    assert "sessions.targets" in EDGES["video.service"]
    assert "sessions.signals" in EDGES["attendance.reactions"]
    assert "accounts.service" in EDGES["org.service"]


def test_arrows_only_point_down_the_layers():
    """Services, views and handlers import rule modules of lower layers only (models are
    the shared schema: any package's models may name another's)."""
    wrong = []
    for module, targets in EDGES.items():
        mine = LAYERS.index(_package(module))
        for target in targets:
            other = _package(target)
            if other in LAYERS and other != _package(module) and not _is_models(target) \
                    and LAYERS.index(other) > mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_cycle_between_domain_packages():
    graph: dict[str, set[str]] = {p: set() for p in LAYERS}
    for module, targets in EDGES.items():
        for target in targets:
            other = _package(target)
            if other in LAYERS and other != _package(module) and not _is_models(target):
                graph[_package(module)].add(other)
    seen: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if seen.get(node) == 1:
            pytest.fail("import cycle between packages: " + " -> ".join([*path, node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        seen[node] = 2

    for package in LAYERS:
        visit(package, [])


def test_models_import_only_models_and_core():
    wrong = [f"{m} -> {t}" for m, targets in EDGES.items() if _is_models(m)
             for t in targets if _package(t) in LAYERS and _package(t) != "core"
             and not _is_models(t)]
    assert wrong == []


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("sessions", "attendance"),  # scheduling asks attendance by signals only
    ("sessions", "video"),
    ("core", "accounts"),  # core knows principals by a registered loader
    ("core", "org"),
    ("core", "sessions"),
])
def test_forbidden_package_arrows(importer, forbidden):
    wrong = [f"{m} -> {t}" for m, targets in EDGES.items() if _package(m) == importer
             for t in targets if _package(t) == forbidden]
    assert wrong == []


def test_rules_do_not_import_the_http_layer():
    wrong = [f"{m} -> {t}" for m, targets in EDGES.items()
             if m.split(".")[-1] in RULE_MODULES for t in targets
             if t == "core.api" or t.startswith("core.api.") or t.endswith(".views")
             or ".views." in t or t == "flask.request"]
    assert wrong == []


def test_socket_handlers_do_not_import_views():
    wrong = [f"{m} -> {t}" for m, targets in EDGES.items() if m.endswith(".events")
             for t in targets if t.endswith(".views") or ".views." in t]
    assert wrong == []


@pytest.mark.parametrize(("modules", "absent"), [
    ("sessions.service, sessions.targets, sessions.views, sessions.ical", "attendance"),
    ("core.api, core.sockets, core.principals, core.errors", "accounts"),
    ("video.events, video.service", "video.views"),
])
def test_importing_a_package_does_not_load_the_forbidden_one(modules, absent):
    """A fresh interpreter imports the modules: none of `absent` gets loaded."""
    code = (f"import sys; import {modules}; "
            f"print(sorted(m for m in sys.modules if m == {absent!r} "
            f"or m.startswith({absent + '.'!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"


#: Packages whose modules each have their tests in tests/<package>/test_<module>.py (the
#: two services split along their seams), and the modules whose tests live elsewhere.
MIRRORED = ("sessions", "attendance")
NOT_MIRRORED = {
    "sessions.errors": "error classes, raised and checked by every test",
    "sessions.models": "tables, exercised by every test",
    "sessions.schemas": "API shapes: test_api.py",
    "sessions.views": "pages and the API: test_api.py, test_pages.py, test_browser.py",
    "sessions.service": "the writes and re-exports: test_api.py, test_pages.py, test_import.py",
    "sessions.ical": "feeds and imports: test_feeds.py, test_import.py, test_import_clients.py",
    "attendance.errors": "error classes, raised and checked by every test",
    "attendance.models": "tables, exercised by every test",
    "attendance.schemas": "API shapes: test_api.py",
    "attendance.views": "pages and the API: test_api.py, test_pages.py, test_roll_call_page.py",
    "attendance.service": "re-exports the modules below",
    "attendance.events": "Socket.IO handlers: test_socket.py",
    "attendance.live": "pushes to the pages: test_socket.py",
    "attendance.exports": "sheets and files: test_api.py, test_security_exports.py",
    "attendance.presence": "who is online, across processes: tests/test_redis.py, test_socket.py",
    "attendance.reactions": "the signal receiver: tests/sessions/test_signals.py",
    "attendance.watching": "members watching alone: tests/video/test_watching.py",
}


def test_each_rule_module_has_its_mirrored_test_file():
    missing, stale = [], []
    for name, path in MODULES.items():
        package, _, module = name.partition(".")
        if package not in MIRRORED or not module or path.name == "__init__.py":
            continue
        mirrored = ROOT / "tests" / package / f"test_{module}.py"
        if name in NOT_MIRRORED:
            if mirrored.exists():
                stale.append(name)
        elif not mirrored.exists():
            missing.append(f"{name}: tests/{package}/test_{module}.py")
    assert not missing, f"modules without their test file: {missing}"
    assert not stale, f"listed in NOT_MIRRORED but mirrored now: {stale}"
    assert set(NOT_MIRRORED) <= set(MODULES), "NOT_MIRRORED names a module that is gone"
