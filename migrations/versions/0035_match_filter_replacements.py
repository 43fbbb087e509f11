"""Fuzzy discovery index: replacements sent in several batches are kept aside until their last batch, so that
the participant's earlier set answers whole until the new one takes its place in one transaction.

Revision ID: 0035_match_filter_replacements
Revises: 0034_audit_anomaly_flags
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035_match_filter_replacements"
down_revision = "0034_audit_anomaly_flags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "match_filter_staged",
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("replacement", sa.String(64), nullable=False),
        sa.Column("local_ref", sa.String(128), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("clk", sa.LargeBinary(), nullable=False),
        sa.Column("blocks", sa.LargeBinary(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("confidential_reason", sa.String(64), nullable=True),
        sa.Column("minor", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partnership", "organisation", "record_type", "replacement", "local_ref",
                                name=op.f("pk_match_filter_staged")),
    )
    op.create_index("ix_match_filter_staged_expires_at", "match_filter_staged", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_match_filter_staged_expires_at", table_name="match_filter_staged")
    op.drop_table("match_filter_staged")
