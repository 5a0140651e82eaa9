"""sites: QR check-in options (network ranges, a spoken room code)

Revision ID: c41f0e2d9a17
Revises: b1c4e7d2a9f3
Create Date: 2026-12-02 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c41f0e2d9a17"
down_revision = "b1c4e7d2a9f3"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkin_networks", sa.String(length=1000),
                                      nullable=False, server_default=""))
        batch_op.add_column(sa.Column("checkin_code_required", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("checkin_code_required")
        batch_op.drop_column("checkin_networks")
