"""Extensions, created unbound here and bound to the app in create_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_babel import Babel
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase, Session


class Base(DeclarativeBase):
    """Declarative base shared by every domain's models."""


class ScopedSession(Session):
    """What `db.session` is to the type checker: flask-sqlalchemy's `scoped_session`
    proxies every `Session` method to the request's session, so it passes wherever a
    service takes a `sqlalchemy.orm.Session`; `remove()` ends the thread's session."""

    def remove(self) -> None: ...


class Database(SQLAlchemy):
    """flask-sqlalchemy, with `session` typed as the `Session` its scoped session stands for."""

    session: ScopedSession  # type: ignore[assignment]  # a scoped_session proxying a Session


db = Database(model_class=Base)
# The models' base class: flask-sqlalchemy's `db.Model` (built on `Base`, with its table
# naming and binds); the type checker cannot take an attribute of `db` as a base class.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
socketio = SocketIO()
