"""Discovery index: a keyed tag of the participant's own pseudonym of each enrolled subject (``enrolments.own_tag``).

Why: a holder names related subjects (a company's directors) in its records by its own pseudonyms, and the
gateway translates only those the holder enrolled. To find them it converted each into the partnership domain
(one elliptic-curve multiplication) before looking it up; with a tag of the holder's own pseudonym stored beside
the row, the text the holder sent is looked up by its tag (``PseudonymService.related_for_requester``). A tag (an
HMAC under a key derived from the pseudonym keys, ``Transcryptor.index_tag``), not the pseudonym: the database
alone must not link a participant's pseudonyms, which it holds with the identities, to the index.

Existing rows get null: they are found as before, by the partnership pseudonym, until the subject is enrolled
again or the index is re-keyed (``wgs-gateway pseudonyms rotate|rekey`` fills it in).

Revision ID: 0042_enrolment_own_pseudonym
Revises: 0041_case_listing_order
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0042_enrolment_own_pseudonym"
down_revision = "0041_case_listing_order"
branch_labels = None
depends_on = None

_INDEX = "ix_enrolments_own_tag"


def upgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.add_column(sa.Column("own_tag", sa.String(128), nullable=True))
    op.create_index(_INDEX, "enrolments", ["partnership", "organisation", "own_tag"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="enrolments")
    with op.batch_alter_table("enrolments") as batch:
        batch.drop_column("own_tag")
