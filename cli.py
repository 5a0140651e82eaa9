"""CLI: `flask --app app db upgrade | create-admin | import-members | seed-demo |
extend-horizons`."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask

from core.errors import DomainError
from extensions import db


def init_app(app: Flask) -> None:
    app.cli.add_command(create_admin)
    app.cli.add_command(import_members)
    app.cli.add_command(seed_demo)
    app.cli.add_command(extend_horizons)


@click.command("extend-horizons")
def extend_horizons() -> None:
    """Materialize open-ended recurrences up to the horizon (run daily, e.g. from cron)."""
    from core.appctx import app_object
    from sessions.jobs import extend_all_horizons

    created = extend_all_horizons(app_object())
    click.echo(f"extended: {created} occurrences created")


@click.command("create-admin")
@click.argument("username")
@click.password_option()
def create_admin(username: str, password: str) -> None:
    """Create an admin user."""
    from accounts.service import create_user

    try:
        create_user(db.session, username=username, password=password, role="admin",
                    display_name=username)
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    db.session.commit()
    click.echo(f"created admin {username}")


@click.command("import-members")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
def import_members(path: Path, dry_run: bool) -> None:
    """Import members from an xlsx or csv file (Chinese or English headers)."""
    from org.service import import_members as run_import

    try:
        report = run_import(db.session, path.name, path.read_bytes(), dry_run=dry_run)
    except DomainError as exc:
        db.session.rollback()
        for row in exc.details.get("rows", []):
            click.echo(f"  第 {row['row']} 行: {row['message']}", err=True)
        raise click.ClickException(exc.message) from exc
    if dry_run:
        db.session.rollback()
    else:
        db.session.commit()
    click.echo(
        f"{'(dry run) ' if dry_run else ''}created {report['created']}, "
        f"updated {report['updated']}, unchanged {report['unchanged']}"
    )


@click.command("seed-demo")
def seed_demo() -> None:
    """Seed the demo organization, sites, members and sessions (on an empty database)."""
    import demo

    if not demo.is_empty(db.session):
        raise click.ClickException("database is not empty; demo data not seeded")
    demo.seed(db.session)
    db.session.commit()
    click.echo("demo data seeded")
