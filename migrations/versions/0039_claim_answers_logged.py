"""Idempotency-Key claims say whether their attempt logged its holders' answers (``answers_logged``): such a
claim is never taken over, given up on failure, nor removed as abandoned, so the key's request is not run a
second time; only the commit that stores its outcome gives it up (``gateway.exchange.repository``).

Existing claims get false: their attempts logged nothing past the write-ahead under this rule, as before.

Revision ID: 0039_claim_answers_logged
Revises: 0038_clk_key_id
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0039_claim_answers_logged"
down_revision = "0038_clk_key_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_claims") as batch:
        batch.add_column(sa.Column("answers_logged", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("exchange_claims") as batch:
        batch.drop_column("answers_logged")
