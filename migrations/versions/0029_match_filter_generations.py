"""Fuzzy discovery index: a generation counter per (partnership, participant, record type), bumped with every
change to its match filters, so that each gateway process can keep the decoded filters in memory and see at
its next request that another process changed them.

Revision ID: 0029_match_filter_generations
Revises: 0028_audit_on_demand
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029_match_filter_generations"
down_revision = "0028_audit_on_demand"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "match_filter_generations",
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("partnership", "organisation", "record_type",
                                name=op.f("pk_match_filter_generations")),
    )


def downgrade() -> None:
    op.drop_table("match_filter_generations")
