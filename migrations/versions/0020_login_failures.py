"""Auth: the login throttle's failed attempts in the database, so that the limit per username holds over
every gateway process together (see ``gateway.auth.accounts.LoginThrottle``).

Revision ID: 0020_login_failures
Revises: 0019_daily_request_counts
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_login_failures"
down_revision = "0019_daily_request_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("username_key", sa.String(64), nullable=False),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username_key", name=op.f("pk_login_failures")),
    )
    op.create_index(op.f("ix_login_failures_last_at"), "login_failures", ["last_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failures_last_at"), table_name="login_failures")
    op.drop_table("login_failures")
