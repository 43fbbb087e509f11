"""Match handles: a fuzzy discovery hit's opaque, short-lived handle to the holder's matched record, which the
requester cites in a follow-up exchange without ever learning the holder's reference.

Revision ID: 0025_match_handles
Revises: 0024_account_access_generation
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025_match_handles"
down_revision = "0024_account_access_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "match_handles",
        sa.Column("handle_sha256", sa.String(64), nullable=False),
        sa.Column("discovery_id", sa.String(36), nullable=False),
        sa.Column("requester_org", sa.String(64), nullable=False),
        sa.Column("requester_system", sa.String(64), nullable=False),
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("local_ref", sa.String(128), nullable=False),
        sa.Column("filter_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handle_sha256", name=op.f("pk_match_handles")),
    )
    op.create_index("ix_match_handles_expires_at", "match_handles", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_match_handles_expires_at", table_name="match_handles")
    op.drop_table("match_handles")
