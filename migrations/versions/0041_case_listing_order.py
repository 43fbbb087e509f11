"""Escalation cases: ``seq``, the order in which cases became visible (committed), for paging the case lists.

Lists were paged by the case id (UUIDv7, made when the request began): a case whose transaction committed
after a page was read, with an id before that page's last, was never listed by the pages that followed. ``seq``
is given in the transaction that opens the case, under a lock held until it commits
(``escalation.cases.open_case``), so it increases in commit order. Existing cases are numbered in id order.

Revision ID: 0041_case_listing_order
Revises: 0040_checkpoint_keys
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0041_case_listing_order"
down_revision = "0040_checkpoint_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("escalation_cases") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    # One pass: numbered by a window function and joined back (UPDATE ... FROM: PostgreSQL, SQLite 3.33 and
    # later; Debian 12's and the Python images' 3.40). A correlated count(*) of the earlier cases per case, as
    # before, read the table once per case: quadratic in the number of cases, with the table locked meanwhile.
    op.execute("UPDATE escalation_cases SET seq = numbered.n "
               "FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM escalation_cases) AS numbered "
               "WHERE numbered.id = escalation_cases.id")
    with op.batch_alter_table("escalation_cases") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint(op.f("uq_escalation_cases_seq"), ["seq"])


def downgrade() -> None:
    with op.batch_alter_table("escalation_cases") as batch:
        batch.drop_constraint(op.f("uq_escalation_cases_seq"), type_="unique")
        batch.drop_column("seq")
