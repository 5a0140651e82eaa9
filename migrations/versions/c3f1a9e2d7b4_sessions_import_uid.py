"""study sessions: the UID of the calendar event an import created them from; occurrences:
their own title and description; feeds: the time of a change their data cannot show

Importing the same .ics again updates the sessions its UIDs created instead of adding
duplicates (and clashing with them). A deleted session leaves no row behind, so feeds
record when one went (their Last-Modified must not stay behind).

Revision ID: c3f1a9e2d7b4
Revises: c5e1a9d0b7f2
Create Date: 2026-12-02 11:00:00
"""

import sqlalchemy as sa
from alembic import op

import core.types

revision = "c3f1a9e2d7b4"
down_revision = "c5e1a9d0b7f2"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("study_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_uid", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_study_sessions_import_uid"), ["import_uid"],
                              unique=False)
    with op.batch_alter_table("occurrences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title_override", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("description_override", sa.Text(), nullable=True))
    with op.batch_alter_table("calendar_feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changed_at", core.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table("occurrences", schema=None) as batch_op:
        batch_op.drop_column("description_override")
        batch_op.drop_column("title_override")
    with op.batch_alter_table("calendar_feeds", schema=None) as batch_op:
        batch_op.drop_column("changed_at")
    with op.batch_alter_table("study_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_sessions_import_uid"))
        batch_op.drop_column("import_uid")
