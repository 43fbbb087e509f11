"""Escalation: the exchange whose re-run used an allow decision, recorded with that exchange's disclosure.

A decision is used once. Which re-run holds it is recorded since 0015 (``rerun_claim``), but a reservation
that is not given back was taken over once stale, also when its re-run had disclosed and only closing the case
failed afterwards. ``rerun_exchange_id`` is set in the transaction that logs the disclosure; from then on the
decision can be neither given back nor taken over.

Revision ID: 0016_escalation_rerun_used
Revises: 0015_escalation_claims
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_escalation_rerun_used"
down_revision = "0015_escalation_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("escalation_cases") as batch:
        batch.add_column(sa.Column("rerun_exchange_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("escalation_cases") as batch:
        batch.drop_column("rerun_exchange_id")
