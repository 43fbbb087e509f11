"""Fuzzy discovery index: each match filter row carries the generation that wrote it, withdrawn references are
recorded with the generation that withdrew them, and each counter says from which generation on that record
is complete — so a gateway process can bring its decoded copy up to date by reading only what changed.

Existing rows read as generation 0 and every existing counter as complete from its current generation on: no
removal before the upgrade is recorded, so a copy older than that is read in full (as before the upgrade).

Revision ID: 0030_match_filter_changes
Revises: 0029_match_filter_generations
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030_match_filter_changes"
down_revision = "0029_match_filter_generations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("match_filters") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_match_filters_generation", "match_filters",
                    ["partnership", "organisation", "record_type", "generation", "schema_version"])
    with op.batch_alter_table("match_filter_generations") as batch:
        batch.add_column(sa.Column("stamped", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("history_from", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE match_filter_generations SET stamped = generation, history_from = generation")
    op.create_table(
        "match_filter_removals",
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(32), nullable=False),
        sa.Column("local_ref", sa.String(128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("partnership", "organisation", "record_type", "local_ref",
                                name=op.f("pk_match_filter_removals")),
    )
    op.create_index("ix_match_filter_removals_generation", "match_filter_removals",
                    ["partnership", "organisation", "record_type", "generation"])


def downgrade() -> None:
    op.drop_index("ix_match_filter_removals_generation", table_name="match_filter_removals")
    op.drop_table("match_filter_removals")
    with op.batch_alter_table("match_filter_generations") as batch:
        batch.drop_column("history_from")
        batch.drop_column("stamped")
    op.drop_index("ix_match_filters_generation", table_name="match_filters")
    with op.batch_alter_table("match_filters") as batch:
        batch.drop_column("generation")
