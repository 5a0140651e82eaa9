"""One authorization policy: `can(principal, action, resource)` and `require(...)`.

Each domain registers the actions it owns in its own `access.py` (as Pyramid's ACLs or
Indico's `can_manage` do): a named action ("session.edit", "roll_call.mark", ...), a rule
`(db session, principal, resource) -> bool`, the error raised when it refuses, and the
roles it may be granted to (for the table in docs/authorization.md). `core` never imports
a domain: the domains call `register` when they are imported (models.py imports every
package, so every action is registered once the app is created).

Principals: a user, a site screen (`core.principals.SiteScreen`) or `SYSTEM` (jobs, the
CLI, the writer's own tasks), which every rule grants. `None` (nobody) is refused.
Views, socket handlers, exports and templates (the Jinja global `can`) ask here; role
comparisons live only in the domains' access modules (tests/test_policy.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.errors import DomainError, Forbidden
from core.principals import SYSTEM, is_system

#: The roles of the table in docs/authorization.md, in its column order.
ROLES = ("admin", "organizer", "trainer", "site_operator", "site_screen", "member")

Rule = Callable[[Session, Any, Any], bool]


@dataclass(frozen=True)
class Action:
    name: str
    rule: Rule
    #: The error `require` raises: a callable of (principal, resource) -> DomainError.
    refuse: Callable[[Any, Any], DomainError]
    #: What the table says of each role (docs/authorization.md); "" where refused.
    roles: dict[str, str]
    module: str


_actions: dict[str, Action] = {}


def register(name: str, *, roles: dict[str, str],
             refuse: Callable[[Any, Any], DomainError] | str | None = None
             ) -> Callable[[Rule], Rule]:
    """Register the rule of `name` (a decorator). `roles` maps each role that may be
    granted the action to a short note ("all", "his subtree", ...); unknown roles fail."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"{name}: unknown roles {sorted(unknown)}")

    def decorator(rule: Rule) -> Rule:
        if name in _actions and _actions[name].rule is not rule:
            raise ValueError(f"action {name} registered twice "
                             f"({_actions[name].module}, {rule.__module__})")
        if callable(refuse):
            refuser = refuse
        else:
            message = refuse or "当前角色无权执行此操作"

            def refuser(principal: Any, _resource: Any) -> DomainError:
                return Forbidden(message, details={"role": getattr(principal, "role", None)})
        _actions[name] = Action(name, rule, refuser, dict(roles), rule.__module__)
        return rule
    return decorator


def actions() -> dict[str, Action]:
    """Every registered action by name."""
    return dict(_actions)


def _session(session: Session | None) -> Session:
    if session is not None:
        return session
    from extensions import db  # the app's session, when the caller has none at hand

    return db.session


def can(principal: Any, action: str, resource: Any = None, *,
        session: Session | None = None) -> bool:
    """May `principal` do `action` (on `resource`)? An unknown action is an error."""
    try:
        entry = _actions[action]
    except KeyError:
        raise LookupError(f"no rule registered for action {action!r}") from None
    if principal is None:
        return False
    if is_system(principal):
        return True
    if not getattr(principal, "is_authenticated", True) or not getattr(principal, "role", None):
        return False  # flask-login's anonymous user
    try:
        return bool(entry.rule(_session(session), principal, resource))
    except DomainError:
        return False  # a rule may refuse with its domain's own error (see require)


def require(principal: Any, action: str, resource: Any = None, *,
            session: Session | None = None) -> None:
    """Raise unless `can(...)`: the error the rule raised (a domain's 403 or 404 with its
    own message and details), else the action's registered error."""
    entry = _actions.get(action)
    if entry is None:
        raise LookupError(f"no rule registered for action {action!r}")
    if is_system(principal):
        return
    if principal is not None and getattr(principal, "is_authenticated", True) \
            and getattr(principal, "role", None) \
            and entry.rule(_session(session), principal, resource):
        return
    raise entry.refuse(principal, resource)


__all__ = ["ROLES", "SYSTEM", "Action", "actions", "can", "register", "require"]
