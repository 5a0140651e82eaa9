"""attendance events: ON DELETE RESTRICT on their occurrence

An occurrence with attendance events can no longer be deleted (it was CASCADE: a bug in
the scheduling side's guard would have deleted attended occurrences and their log). The
service answers such a delete with 409. The constraint gets a name of its own, so later
migrations find it on every database.

Revision ID: b1c4e7d2a9f3
Revises: a758866c380e
Create Date: 2026-12-02 10:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b1c4e7d2a9f3"
down_revision = "a758866c380e"
branch_labels = None
depends_on = None

NAME = "fk_attendance_events_occurrence_id"
#: SQLite keeps the initial constraint unnamed: batch mode names reflected ones with this.
CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _current_name() -> str:
    """The name of the foreign key on attendance_events.occurrence_id on this database."""
    for fk in sa.inspect(op.get_bind()).get_foreign_keys("attendance_events"):
        if fk["constrained_columns"] == ["occurrence_id"]:
            # PostgreSQL: "attendance_events_occurrence_id_fkey"; SQLite: unnamed.
            return fk["name"] or "fk_attendance_events_occurrence_id_occurrences"
    raise RuntimeError("attendance_events.occurrence_id has no foreign key")


def _replace(ondelete: str) -> None:
    old = _current_name()
    with op.batch_alter_table("attendance_events", naming_convention=CONVENTION) as batch_op:
        batch_op.drop_constraint(old, type_="foreignkey")
        batch_op.create_foreign_key(NAME, "occurrences", ["occurrence_id"], ["id"],
                                    ondelete=ondelete)


def upgrade():
    _replace("RESTRICT")


def downgrade():
    _replace("CASCADE")
