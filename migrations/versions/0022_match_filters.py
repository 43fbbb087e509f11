"""Fuzzy discovery: the match filters (CLKs) participants enrol for records without a shared number.

Revision ID: 0022_match_filters
Revises: 0021_pseudonyms_made
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_match_filters"
down_revision = "0021_pseudonyms_made"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "match_filters",
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("local_ref", sa.String(128), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("clk", sa.LargeBinary(), nullable=False),
        sa.Column("blocks", sa.LargeBinary(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("confidential_reason", sa.String(64), nullable=True),
        sa.Column("minor", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partnership", "organisation", "record_type", "local_ref",
                                name=op.f("pk_match_filters")),
    )
    op.create_index("ix_match_filters_partnership_record_type", "match_filters", ["partnership", "record_type"])


def downgrade() -> None:
    op.drop_index("ix_match_filters_partnership_record_type", table_name="match_filters")
    op.drop_table("match_filters")
