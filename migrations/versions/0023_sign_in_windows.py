"""Console: the windows of failed sign-ins and refused token requests in the database, so that a flood
spread over every gateway process is one entry and one summary per window (see
``gateway.console.signins``), and a stopped process loses no count.

Revision ID: 0023_sign_in_windows
Revises: 0022_match_filters
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_sign_in_windows"
down_revision = "0022_match_filters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_windows",
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=True),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("more", sa.Integer(), nullable=False),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("channel", "reason", "target", "period", name=op.f("pk_sign_in_windows")),
    )
    op.create_index(op.f("ix_sign_in_windows_period"), "sign_in_windows", ["period"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sign_in_windows_period"), table_name="sign_in_windows")
    op.drop_table("sign_in_windows")
