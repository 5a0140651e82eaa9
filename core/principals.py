"""Who is calling, below every domain: the Principal protocol, the site-screen principal,
and the token loader a domain registers (accounts does, in its `init_app`).

`core` never imports a domain: the HTTP edge (`core.api`) and the socket edge
(`core.sockets`) ask `principal_for_token`, which calls whatever loader was registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session


class Principal(Protocol):
    """What rules need of a caller: a role (and an id, None for a screen)."""

    @property
    def role(self) -> str: ...

    @property
    def id(self) -> int | None: ...


@dataclass(frozen=True)
class SiteScreen:
    """The principal behind a meeting-room screen's token: one site, no user."""

    site_id: int
    role: str = "site_screen"
    id: None = None


@dataclass(frozen=True)
class SystemPrincipal:
    """The application itself: jobs, the CLI, seeding, the attendance writer's own tasks.
    Every rule of `core.policy` grants it; the audit log names it "system"."""

    role: str = "system"
    id: None = None
    username: str = "system"
    is_authenticated: bool = True

    def __repr__(self) -> str:
        return "SYSTEM"


#: The one system principal (instead of `actor=None`).
SYSTEM = SystemPrincipal()


def is_system(principal: Any) -> bool:
    return isinstance(principal, SystemPrincipal)


#: (database session, bearer string) -> a Principal, or None for an unknown token.
TokenLoader = Callable[[Session, str], Any]
_token_loader: TokenLoader | None = None


def register_token_loader(loader: TokenLoader) -> None:
    """Register the function that turns a bearer token into a principal."""
    global _token_loader
    _token_loader = loader


def principal_for_token(session: Session, token: str) -> Any:
    """The principal a bearer token stands for, or None (unknown, revoked, disabled)."""
    if _token_loader is None:
        raise RuntimeError("no token loader registered (accounts.views.init_app registers it)")
    return _token_loader(session, token)
