"""The discovery index (schema by migration 0013_enrolments).

One row per (partnership, participant organisation, subject) that the participant enrolled: the subject as
its **partnership-domain** pseudonym (never shown to a partner) and the record types held. That is all the
gateway knows about who holds what; it answers hit/no-hit from here without asking anyone.

Since 0018 a row also carries what the participant would refuse discovery on if it were asked itself
(``connectors.holder.Holder.discover``): that it keeps the subject confidential (and the reason code it
refuses with) and that the subject is a minor. Without them the index answered ``hit`` where the holder
refuses, and gave away exactly what the confidentiality protects.

Since 0042 a row also carries a keyed tag of the participant's **own** pseudonym of the subject (its domain
``Domain(partnership, organisation)``, the row's key version: ``Transcryptor.index_tag``, an HMAC under a key
derived from the pseudonym keys), so that a related subject a holder names in its records is recognised as
enrolled by the tag of the text it sent, without first converting it into the partnership domain (one
elliptic-curve multiplication per related subject saved; ``PseudonymService.related_for_requester``). A tag, not
the pseudonym: a participant holds its own pseudonyms with the identities, and the database alone would then link
them to the partnership's index; the tag takes the gateway's keys, as the conversion does. Null for rows written
before 0042: those are found as before.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Index, Integer, LargeBinary, String, Table, false

from gateway.db.metadata import metadata

enrolments = Table(
    "enrolments",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("pseudonym", String(128), primary_key=True),
    Column("key_version", Integer, nullable=False),
    Column("record_types", JSON, nullable=False),
    Column("categories", JSON, nullable=False),  # of those records: a hit counts only in permitted categories
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confidential", Boolean, nullable=False, server_default=false()),  # the holder refuses about it
    Column("confidential_reason", String(64), nullable=True),  # the code it refuses with (when confidential)
    Column("minor", Boolean, nullable=False, server_default=false()),  # under 18 by the holder's own data
    Column("own_tag", String(128), nullable=True),  # HMAC of the participant's own (0042); null: before
    Index("ix_enrolments_partnership_pseudonym", "partnership", "pseudonym"),
    Index("ix_enrolments_own_tag", "partnership", "organisation", "own_tag"),
)


pseudonyms_made = Table(
    "pseudonyms_made",
    metadata,
    Column("requester_system", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # the UTC date, ISO
    Column("made", Integer, nullable=False),
)
"""How many pseudonyms each partner system had made per UTC day (migration 0021): the daily cap of
:mod:`gateway.enrolment.quota`, counted over every gateway process together."""


match_filters = Table(
    "match_filters",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("record_type", String(32), primary_key=True),  # a shipped linkage schema's id
    Column("local_ref", String(128), primary_key=True),  # the holder's own reference; never shown to others
    Column("schema_version", Integer, nullable=False),
    Column("clk", LargeBinary, nullable=False),  # the Bloom filter, filter_bits / 8 bytes
    Column("blocks", LargeBinary, nullable=False),  # its blocking keys, 8 bytes (little-endian) each; or none
    Column("categories", JSON, nullable=False),
    Column("confidential", Boolean, nullable=False, server_default=false()),
    Column("confidential_reason", String(64), nullable=True),
    Column("minor", Boolean, nullable=False, server_default=false()),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),  # the holder's generation that wrote it
    Index("ix_match_filters_partnership_record_type", "partnership", "record_type"),
    # what changed since a generation; with the version, also how many a participant holds (index only)
    Index("ix_match_filters_generation", "partnership", "organisation", "record_type", "generation",
          "schema_version"),
)
"""The fuzzy discovery index (migration 0022): per participant, the CLKs of the records it holds without a shared
number, under its own reference, with what the pseudonym index keeps about a subject (categories, confidential,
minor). The gateway compares requesters' filters with them and answers hit/no-hit; it cannot read them (the CLK
secret is the partnership's), and neither scores nor references ever leave it.

Since 0030 a row carries the participant's generation (``match_filter_generations``) of the transaction that last
wrote it, so that a process can bring its decoded copy up to date by reading only the rows written since
(:mod:`gateway.enrolment.filter_cache`); rows written before 0030 read as generation 0."""


match_handles = Table(
    "match_handles",
    metadata,
    Column("handle_sha256", String(64), primary_key=True),  # SHA-256 of the handle; the handle itself is not kept
    Column("discovery_id", String(36), nullable=False),
    Column("requester_org", String(64), nullable=False),
    Column("requester_system", String(64), nullable=False),
    Column("partnership", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("holder", String(64), nullable=False),  # the organisation whose record matched
    Column("record_type", String(32), nullable=False),
    Column("local_ref", String(128), nullable=False),  # the holder's reference of the record; never shown to others
    Column("filter_sha256", String(64), nullable=False),  # the record's enrolled row as it matched
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_match_handles_expires_at", "expires_at"),
)
"""Match handles of fuzzy discovery hits (migration 0025): per (holder, subject) hit, what a follow-up exchange
citing the handle needs — who may cite it (the requesting system, for the same partnership and purpose), whose
record it is about and how that record looked when it matched (a record withdrawn or re-enrolled since no
longer resolves). Only the handle's hash is stored, so the table cannot be read back into usable handles.
Expired rows are removed when new handles are stored (``gateway.exchange.match_handles``)."""


match_filter_generations = Table(
    "match_filter_generations",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("record_type", String(32), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("stamped", Integer, nullable=False, server_default="0"),
    Column("history_from", Integer, nullable=False, server_default="0"),
    Column("clk_key_id", String(32), nullable=True),
)
"""Per participant and record type, a counter bumped in every transaction that changes its rows of
``match_filters`` (migration 0029): each gateway process keeps the decoded filters in memory
(:mod:`gateway.enrolment.filter_cache`) and reads this one row per request to know whether they are still the
ones stored — a change made through any process is seen by every other at its next request. A row is never
deleted (a counter that started again at 1 could match a stale copy); no row reads as generation 0.

Since 0030 (the copy is brought up to date from the rows changed since it was read): ``stamped`` is the last
generation whose writer stamped its rows and recorded its removals — a writer that bumps the counter without
doing so (a process still running code from before 0030) leaves it behind, and no copy is then updated from
the changes alone; ``history_from`` is the oldest generation a copy may be updated from — older removals are
no longer recorded (``match_filter_removals`` is pruned), or a replace or retirement removed everything.

Since 0038 ``clk_key_id`` is the key id of the CLK secret the participant's current filters were encoded with
(:mod:`gateway.enrolment.clk_keys`): null when unknown (enrolled before, or by a client that did not say, or
none held)."""


match_filter_removals = Table(
    "match_filter_removals",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("record_type", String(32), primary_key=True),
    Column("local_ref", String(128), primary_key=True),
    Column("generation", Integer, nullable=False),  # the generation that withdrew it (last time)
    Index("ix_match_filter_removals_generation", "partnership", "organisation", "record_type", "generation"),
)
"""The references a participant withdrew from ``match_filters``, with the generation that withdrew them
(migration 0030): a process holding a decoded copy of an earlier generation drops them without reading the
rest. Kept for the last :data:`gateway.enrolment.filter_cache.HISTORY` generations only, and emptied for the
participant when a replace or a retirement removes all of its records (``history_from`` says from which
generation on the record is complete)."""


match_filter_staged = Table(
    "match_filter_staged",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("record_type", String(32), primary_key=True),
    Column("replacement", String(64), primary_key=True),  # the id the participant gave its replacement
    Column("local_ref", String(128), primary_key=True),
    Column("schema_version", Integer, nullable=False),
    Column("clk", LargeBinary, nullable=False),
    Column("blocks", LargeBinary, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("confidential", Boolean, nullable=False, server_default=false()),
    Column("confidential_reason", String(64), nullable=True),
    Column("minor", Boolean, nullable=False, server_default=false()),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),  # refreshed by each batch of the replacement
    Column("clk_key_id", String(32), nullable=True),  # the batch's (0038): a replacement's batches share one
    Index("ix_match_filter_staged_expires_at", "expires_at"),
)
"""The records of replacements sent in several batches, kept aside until the last batch (migration 0035,
:mod:`gateway.enrolment.replacement`): ``match_filters`` changes only when the replacement is complete, in one
transaction, so a failure in a later batch leaves the participant's earlier set answering whole. Rows of a
replacement whose next batch does not come within the time allowed are removed (abandoned)."""
