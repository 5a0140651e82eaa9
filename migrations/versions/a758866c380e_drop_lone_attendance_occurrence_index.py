"""attendance events: indexes that lead with the writer's search columns

Repeats are looked up by event id, open check-ins by member: their indexes now lead with
those columns. The lone occurrence index goes (the (occurrence, member) index serves
listings). With indexes that led with the occurrence, PostgreSQL's planner read every
event of a live occurrence for each writer batch (bench/attendance.py).

Revision ID: a758866c380e
Revises: 3daada954219
Create Date: 2026-11-26 01:08:44.987045
"""

from alembic import op

revision = "a758866c380e"
down_revision = "3daada954219"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("attendance_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attendance_events_occurrence_id"))
        batch_op.drop_constraint("uq_attendance_event_once", type_="unique")
        batch_op.create_unique_constraint("uq_attendance_event_once",
                                          ["event_id", "source", "occurrence_id"])
        batch_op.create_index("ix_attendance_events_member_occ",
                              ["member_id", "occurrence_id"], unique=False)


def downgrade():
    with op.batch_alter_table("attendance_events", schema=None) as batch_op:
        batch_op.drop_index("ix_attendance_events_member_occ")
        batch_op.drop_constraint("uq_attendance_event_once", type_="unique")
        batch_op.create_unique_constraint("uq_attendance_event_once",
                                          ["occurrence_id", "source", "event_id"])
        batch_op.create_index(batch_op.f("ix_attendance_events_occurrence_id"),
                              ["occurrence_id"], unique=False)
