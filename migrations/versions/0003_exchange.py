"""Exchanges: outcomes, idempotency keys, sealed records for replay.

Revision ID: 0003_exchange
Revises: 0002_auth
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_exchange"
down_revision = "0002_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester_org", sa.String(64), nullable=False),
        sa.Column("requester_system", sa.String(64), nullable=False),
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("case_reference", sa.String(128), nullable=False),
        sa.Column("register_version", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.Column("sealed_records", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
        sa.UniqueConstraint("requester_system", "idempotency_key",
                            name="uq_exchanges_requester_system_idempotency_key"),
    )
    op.create_index("ix_exchanges_requester_system_purpose_created_at", "exchanges",
                    ["requester_system", "purpose", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_requester_system_purpose_created_at", table_name="exchanges")
    op.drop_table("exchanges")
