"""First start of the embedded default: migrate, ensure an admin, seed demo data."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select, text

from config import settings
from extensions import db

log = logging.getLogger(__name__)


#: pg_advisory_lock key of the start-up step ("yuanjiao" in ASCII, folded to 63 bits).
_PG_LOCK_KEY = 0x7975616E6A69616F


@contextlib.contextmanager
def startup_lock(app: Flask) -> Iterator[None]:
    """One process at a time migrates and seeds: gunicorn starts its workers together,
    and two concurrent `upgrade`s of one database fail or seed twice.

    PostgreSQL: a session advisory lock on a connection of its own. SQLite: an exclusive
    lock on a file beside the database file (the database is a file on this host anyway).
    """
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = db.engine.url.database
    lock_path = (Path(f"{database}.startup.lock") if database and database != ":memory:"
                 else Path(app.instance_path) / "startup.lock")
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def bootstrap(app: Flask) -> None:
    """Bring the database to the latest migration, then make sure someone can log in.

    Several workers may start at once: the first migrates and seeds under the lock; the
    others find nothing left to do.
    """
    with app.app_context(), startup_lock(app):
        _bootstrap(app)


def _bootstrap(app: Flask) -> None:
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        ensure_admin(app)
        from sessions.jobs import extend_all_horizons

        extend_all_horizons(app)
        if settings(app).demo:
            import demo

            if demo.is_empty(db.session):
                lines = demo.seed(db.session) or []
                db.session.commit()
                click.echo("已载入演示数据 (demo data seeded)")
                for line in lines:
                    click.echo(f"  {line}")
        db.session.remove()


def ensure_admin(app: Flask) -> None:
    """Create the admin the environment names, or a generated one, when none exists."""
    from accounts.models import User
    from accounts.service import authenticate
    from accounts.service import ensure_admin as create_admin
    from core.errors import DomainError

    username = settings(app).admin_username
    password = settings(app).admin_password
    has_admin = db.session.scalar(select(User.id).where(User.role == "admin").limit(1))
    # One note per database, so that a note never shows another database's password.
    db_key = hashlib.sha256(app.config["SQLALCHEMY_DATABASE_URI"].encode()).hexdigest()[:8]
    note = Path(app.instance_path) / f"initial-admin-{db_key}.txt"
    if has_admin is None:
        generated = not (username and password)
        username = username or "admin"
        password = password or secrets.token_urlsafe(9)
        create_admin(db.session, username, password)
        db.session.commit()
        if generated:
            note.write_text(f"{username}\n{password}\n")
            note.chmod(0o600)
        else:
            click.echo(f"管理员账号 (admin login): {username} / (YUANJIAO_ADMIN_PASSWORD)")
    if note.exists():
        saved_user, saved_password = note.read_text().split("\n")[:2]
        try:
            authenticate(db.session, saved_user, saved_password)
        except DomainError:
            note.unlink()  # the password was changed: the note is no longer true
            return
        click.echo(f"管理员账号 (admin login): {saved_user} / {saved_password}"
                   f"  — change the password after logging in")
