"""Exchange outcome rows: the request's own fingerprint, and the escalation decision a re-run cited.

``request_sha256`` is what an Idempotency-Key binds to: for a re-run, the request *and* the decision it cites.
An objection to a re-run's outcome opens a case bound to the request without the citation, which the escalation
desk had to recover by hashing every decided request of the requester's for that partnership and purpose with
its decision id — and could not recover at all for a re-run that cited a decision made for another request.
Rows written from here on carry the plain fingerprint (``request_fingerprint``) and the cited decision
(``escalation_decision``). Rows written before stay NULL in both: the desk reads those as it did.

Revision ID: 0031_exchange_rerun_citation
Revises: 0030_match_filter_changes
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031_exchange_rerun_citation"
down_revision = "0030_match_filter_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.add_column(sa.Column("request_fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("escalation_decision", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_column("escalation_decision")
        batch.drop_column("request_fingerprint")
