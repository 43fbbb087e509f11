"""Enrolment: the daily count of pseudonyms made per partner system in the database, so that the cap holds
over every gateway process together (see ``gateway.enrolment.quota``).

Revision ID: 0021_pseudonyms_made
Revises: 0020_login_failures
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_pseudonyms_made"
down_revision = "0020_login_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pseudonyms_made",
        sa.Column("requester_system", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("made", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("requester_system", "day", name=op.f("pk_pseudonyms_made")),
    )


def downgrade() -> None:
    op.drop_table("pseudonyms_made")
