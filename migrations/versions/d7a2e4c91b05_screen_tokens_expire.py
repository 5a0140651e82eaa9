"""screen tokens: an expiry for those issued before screen tokens had one

A meeting-room screen's token now lives YUANJIAO_SCREEN_TOKEN_DAYS (365) until renewed
from the site's page. Tokens issued before had none; they get a year from this upgrade,
so no screen goes dark on the day of the upgrade.

Revision ID: d7a2e4c91b05
Revises: c3f1a9e2d7b4
Create Date: 2026-12-02 15:30:00
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

import core.types

revision = "d7a2e4c91b05"
down_revision = "c3f1a9e2d7b4"
branch_labels = None
depends_on = None

tokens = sa.table("api_tokens", sa.column("purpose", sa.String),
                  sa.column("revoked", sa.Boolean),
                  sa.column("expires_at", core.types.UTCDateTime()))


def upgrade():
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    op.execute(tokens.update().where(tokens.c.purpose == "site", tokens.c.expires_at.is_(None),
                                     tokens.c.revoked.is_(False))
               .values(expires_at=expires))


def downgrade():
    # The older code has no renew action: its screen tokens live until revoked.
    op.execute(tokens.update().where(tokens.c.purpose == "site").values(expires_at=None))
