"""The database refuses to delete attended occurrences: the migration makes
attendance_events.occurrence_id ON DELETE RESTRICT, and back (the service's 409 is in
test_signals.py, a series edit in test_materialize.py)."""

from __future__ import annotations

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app import create_app
from extensions import db
from tests.test_app import empty_database_url  # noqa: F401  (fixture)


def _occurrence_fk(engine) -> dict:
    fks = inspect(engine).get_foreign_keys("attendance_events")
    return next(fk for fk in fks if fk["constrained_columns"] == ["occurrence_id"])


def test_migration_makes_the_key_restrict_and_back(app_config, empty_database_url):  # noqa: F811
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": empty_database_url})
    directory = app.extensions["migrate"].directory
    with app.app_context():
        upgrade(directory=directory, revision="a758866c380e")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "CASCADE"
        upgrade(directory=directory, revision="b1c4e7d2a9f3")
        fk = _occurrence_fk(db.engine)
        assert fk["options"].get("ondelete") == "RESTRICT"
        assert fk["name"] == "fk_attendance_events_occurrence_id"
        downgrade(directory=directory, revision="a758866c380e")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "CASCADE"
        upgrade(directory=directory, revision="b1c4e7d2a9f3")
        assert _occurrence_fk(db.engine)["options"].get("ondelete") == "RESTRICT"
        db.engine.dispose()
