"""Escalation: the database refuses a case row the state machine cannot produce, and a legal gap status the
register does not have — a tier outside 1–3, a state not listed in ``escalation/states.py``, a version below 1.

The workflow never writes such a row; the checks are there for what bypasses it (a defect in a code path that
writes the row, a hand-made fix in SQL), which would otherwise leave a case no step can be taken on — one at
tier 4 is past every deadline rule and every decider list. An upgrade fails (and, on PostgreSQL, changes
nothing) if a row already breaks one: correct it first.

Revision ID: 0033_escalation_checks
Revises: 0032_client_certificate_bound
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033_escalation_checks"
down_revision = "0032_client_certificate_bound"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('open', 'in_review', 'escalated')")
INDEX = "uq_escalation_cases_active_exchange_holder"
CASE_CHECKS = {  # as escalation/tables.py names them (``ck_<table>_<name>``)
    "ck_escalation_cases_tier": "tier BETWEEN 1 AND 3",
    "ck_escalation_cases_state": "state IN ('open', 'in_review', 'escalated', 'decided', 'closed', 'withdrawn', "
                                 "'expired')",
    "ck_escalation_cases_version": "version >= 1",
}
GAP_CHECKS = {"ck_legal_gaps_status": "status IN ('identified', 'on-agenda', 'resolved')"}


def upgrade() -> None:
    # SQLite adds a check by copying the table (batch), and a copy loses the partial index's WHERE: the index
    # is dropped first and made again after, as 0015 made it.
    op.drop_index(INDEX, table_name="escalation_cases")
    with op.batch_alter_table("escalation_cases") as batch:
        for name, condition in CASE_CHECKS.items():
            batch.create_check_constraint(op.f(name), condition)
    op.create_index(INDEX, "escalation_cases", ["exchange_id", "holder_org"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    with op.batch_alter_table("legal_gaps") as batch:
        for name, condition in GAP_CHECKS.items():
            batch.create_check_constraint(op.f(name), condition)


def downgrade() -> None:
    with op.batch_alter_table("legal_gaps") as batch:
        for name in GAP_CHECKS:
            batch.drop_constraint(op.f(name), type_="check")
    op.drop_index(INDEX, table_name="escalation_cases")
    with op.batch_alter_table("escalation_cases") as batch:
        for name in CASE_CHECKS:
            batch.drop_constraint(op.f(name), type_="check")
    op.create_index(INDEX, "escalation_cases", ["exchange_id", "holder_org"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
