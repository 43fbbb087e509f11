"""Claims on Idempotency-Keys while their first attempt is answered (any gateway process sees them).

Revision ID: 0014_exchange_claims
Revises: 0013_enrolments
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_exchange_claims"
down_revision = "0013_enrolments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_claims",
        sa.Column("requester_system", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("exchange_id", sa.String(36), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("requester_system", "idempotency_key", name=op.f("pk_exchange_claims")),
    )


def downgrade() -> None:
    op.drop_table("exchange_claims")
