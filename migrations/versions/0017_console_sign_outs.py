"""Console: signed-out sessions, kept in the database so that signing out holds in every gateway process
and across restarts (see ``gateway.console.signouts``).

Revision ID: 0017_console_sign_outs
Revises: 0016_escalation_rerun_used
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_console_sign_outs"
down_revision = "0016_escalation_rerun_used"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sign_outs",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_console_sign_outs")),
    )


def downgrade() -> None:
    op.drop_table("console_sign_outs")
