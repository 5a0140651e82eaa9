"""First start of the embedded default: migrate, ensure an admin, seed demo data."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select

from extensions import db

log = logging.getLogger(__name__)


def bootstrap(app: Flask) -> None:
    """Bring the database to the latest migration, then make sure someone can log in."""
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        ensure_admin(app)
        if app.config["YUANJIAO_DEMO"]:
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

    username = app.config.get("YUANJIAO_ADMIN_USERNAME")
    password = app.config.get("YUANJIAO_ADMIN_PASSWORD")
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
