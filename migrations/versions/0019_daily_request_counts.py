"""Exchange: rule 6's daily count of requests per system and purpose in the database, so that every gateway
process counts every other's requests too (see ``gateway.exchange.tables.daily_request_counts``).

Revision ID: 0019_daily_request_counts
Revises: 0018_enrolment_refusals
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_daily_request_counts"
down_revision = "0018_enrolment_refusals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_request_counts",
        sa.Column("requester_system", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("requester_system", "purpose", "day", name=op.f("pk_daily_request_counts")),
    )


def downgrade() -> None:
    op.drop_table("daily_request_counts")
