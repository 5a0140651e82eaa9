"""The one authorization policy (issue 10): role comparisons only in the policy modules,
the table of docs/authorization.md generated from the registered actions, the system
principal, and each resource-less action granted to exactly the roles the table names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import policy
from core.principals import SYSTEM, SiteScreen

ROOT = Path(__file__).resolve().parent.parent
#: Where role comparisons may live: the policy and the domains' access modules.
POLICY_MODULES = {"core/policy.py", "accounts/access.py", "org/access.py",
                  "sessions/access.py", "attendance/access.py", "video/access.py"}
PACKAGES = ("core", "accounts", "org", "sessions", "video", "attendance")
TOP_FILES = ("app.py", "cli.py", "bootstrap.py", "demo.py", "extensions.py", "config.py")
ROLE_NAMES = {"admin", "organizer", "trainer", "site_operator", "site_screen", "member",
              "system"}
#: Role predicates of the access modules: calling them elsewhere is a comparison too.
ROLE_HELPERS = {"has_role", "is_admin"}
DOC = ROOT / "docs" / "authorization.md"
COLUMNS = ("admin", "organizer", "trainer", "site operator", "site screen", "member")


def _python_files() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return files + [ROOT / name for name in TOP_FILES if (ROOT / name).exists()]


def _is_role(node: ast.AST) -> bool:
    """`x.role` of a principal (not `User.role` of a query, not `m.dtls.role`)."""
    if not isinstance(node, ast.Attribute) or node.attr != "role":
        return False
    base = node.value
    return not (isinstance(base, ast.Name) and base.id[:1].isupper())


def _names_roles(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in ROLE_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_roles(e) for e in node.elts)
    if isinstance(node, ast.Name):
        return node.id.endswith("ROLES")
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("ROLES")
    return False


def role_comparisons(source: str) -> list[int]:
    """Lines comparing a principal's role with role names, or calling a role predicate."""
    lines = []
    tree = ast.parse(source)
    role_vars: set[str] = set()
    for node in ast.walk(tree):  # `role = user.role` then `role == "admin"` counts too
        if isinstance(node, ast.Assign) and _is_role(node.value):
            role_vars.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_role(o) or (isinstance(o, ast.Name) and o.id in role_vars)
                   for o in operands) and any(_names_roles(o) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in ROLE_HELPERS:
                lines.append(node.lineno)
    return lines


def test_the_scan_sees_role_comparisons():
    assert role_comparisons('if user.role == "admin": pass') == [1]
    assert role_comparisons('ok = principal.role in ("admin", "organizer")') == [1]
    assert role_comparisons('r = u.role\nif r != "member": pass') == [2]
    assert role_comparisons('x = user.role not in CREATOR_ROLES') == [1]
    assert role_comparisons('x = has_role(user, "trainer")') == [1]
    assert role_comparisons('q = select(User).where(User.role == "admin")') == []
    assert role_comparisons('ok = m.dtls.role != "auto"') == []


def test_no_role_comparisons_outside_the_policy_modules():
    """Decisions ask `core.policy.can`; only the access modules compare role strings."""
    found = []
    for path in _python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in POLICY_MODULES:
            continue
        found += [f"{rel}:{line}" for line in role_comparisons(path.read_text("utf-8"))]
    assert found == []


def test_no_role_comparisons_in_templates():
    """Templates ask `can(...)` which links and buttons to show."""
    pattern = re.compile(r"\.role\s*(==|!=|\bin\b|\bnot in\b)|\{%\s*set\s+\w+\s*=\s*[\w.]*\.role")
    found = [f"{p.relative_to(ROOT)}:{n}"
             for p in sorted((ROOT / "templates").rglob("*.html"))
             for n, line in enumerate(p.read_text("utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert found == []


# --- the table of docs/authorization.md ---------------------------------------------------


def policy_table() -> str:
    """The role × action table, as docs/authorization.md holds it."""
    rows = ["| action | " + " | ".join(COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS)]
    for name, action in sorted(policy.actions().items()):
        cells = [action.roles.get(role, "—") for role in policy.ROLES]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def test_every_registered_action_has_its_row_in_the_doc(app):
    """An action registered without a row in docs/authorization.md, or a row without an
    action, or a row whose roles differ from the registered ones fails. To regenerate:
    `.venv/bin/python -m tests.test_policy`."""
    text = DOC.read_text("utf-8")
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", text, re.M))
    registered = set(policy.actions())
    assert registered - documented == set(), "registered, not in the doc"
    assert documented - registered == set(), "in the doc, not registered"
    assert policy_table() in text


def test_an_unknown_action_is_an_error(app):
    with pytest.raises(LookupError):
        policy.can(SYSTEM, "no.such_action")


def test_the_system_principal_may_do_everything_and_nobody_nothing(app):
    for name in policy.actions():
        assert policy.can(SYSTEM, name) is True
        assert policy.can(None, name) is False


def test_the_system_principal_is_audited_as_system(app, db_session):
    from accounts.models import AuditEntry
    from accounts.service import audit

    audit(db_session, "members_imported", actor=SYSTEM, target="file:x.csv")
    db_session.flush()
    entry = db_session.query(AuditEntry).one()
    assert entry.actor_id is None
    assert entry.details["actor"] == "system"


#: Actions that take a resource (checked per route by tests/test_security_matrix.py).
WITH_RESOURCE = {"session.view", "session.edit", "live.publish", "live.watch", "live.manage",
                 "live.end_connection", "site.screen", "attendance.view", "attendance.manage",
                 "attendance.lock", "attendance.correct", "roll_call.mark", "feed.read",
                 "feed.reset", "user.grant_role"}


def _principals(factory, db_session):
    unit = factory.org_unit("甲支部")
    site = factory.site(unit, "甲会议室")
    member = factory.member(unit, site, "甲党员")
    out = {
        "admin": factory.user("admin"),
        "organizer": factory.user("organizer", org_unit_id=unit.id),
        "trainer": factory.user("trainer"),
        "site_operator": factory.user("site_operator", site_id=site.id),
        "site_screen": SiteScreen(site_id=site.id),
        "member": factory.user("member", member_id=member.id),
    }
    db_session.commit()
    return out


def test_resource_less_actions_are_granted_to_the_roles_the_table_names(
        app, factory, db_session):
    """For each action that needs no resource (pages, lists, links): `can` is true for
    exactly the roles with a cell in the table."""
    principals = _principals(factory, db_session)
    wrong = []
    for name, action in sorted(policy.actions().items()):
        if name in WITH_RESOURCE:
            continue
        for role, principal in principals.items():
            if policy.can(principal, name) != (role in action.roles):
                wrong.append(f"{name} × {role}: can={role not in action.roles}")
    assert wrong == []


def test_the_jinja_global_asks_the_policy(app, factory, db_session):
    """The navigation shows the links of the actions the caller may do."""
    principals = _principals(factory, db_session)
    expected = {"admin": {"/sessions", "/org", "/users", "/attendance/reports",
                          "/attendance/ledger"},
                "member": {"/makeup"}, "site_operator": {"/attendance/reports"},
                "trainer": {"/sessions"}}
    every = {"/sessions", "/org", "/users", "/attendance/reports", "/attendance/ledger",
             "/makeup"}
    for role, links in expected.items():
        client = app.test_client()
        with client.session_transaction() as s:
            s["_user_id"] = principals[role].get_id()
            s["_fresh"] = True
        html = client.get("/feeds").get_data(as_text=True)
        shown = {href for href in every if f'href="{href}"' in html}
        assert shown == links, role


if __name__ == "__main__":  # print the table for docs/authorization.md
    import importlib

    for package in PACKAGES[1:]:  # each domain registers its actions on import
        importlib.import_module(f"{package}.access")
    print(policy_table(), end="")


def test_nobody_is_not_the_system(app, db_session):
    """`actor=None` no longer means "the system": the services refuse it; SYSTEM works."""
    from core.errors import Forbidden
    from org.service import create_org_unit
    from sessions.service import create_session

    with pytest.raises(Forbidden):
        create_org_unit(db_session, None, name="无主", kind="committee")
    with pytest.raises(Forbidden):
        create_session(db_session, None, {"title": "x"}, now=None)
    unit = create_org_unit(db_session, SYSTEM, name="机关党委", kind="committee")
    assert unit.id is not None
