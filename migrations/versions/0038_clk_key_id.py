"""Fuzzy discovery index: the key id of the CLK secret a participant's filters were encoded with, so that a
rotated or mistyped secret is told apart from a no-hit (``gateway.enrolment.clk_keys``).

Per participant and record type on its counter row (``match_filter_generations``, read with every discovery
anyway), and per kept record of a replacement (``match_filter_staged``: its batches must share one). Existing
rows get null: unknown, compared as before.

Revision ID: 0038_clk_key_id
Revises: 0037_legal_gap_changes
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0038_clk_key_id"
down_revision = "0037_legal_gap_changes"
branch_labels = None
depends_on = None

_TABLES = ("match_filter_generations", "match_filter_staged")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("clk_key_id", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("clk_key_id")
