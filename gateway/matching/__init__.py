"""Fuzzy matching of records without a shared number: CLK Bloom-filter encodings, Dice, blocking, solving.

Pure library code (NumPy, and numba for the gateway's Dice kernels; no HTTP, no database). Partner side and
gateway side are split by module:

* partner side (pure; exposed through :mod:`gateway.client.matching`):
  :mod:`~gateway.matching.schema` (linkage schemas, one YAML file per record type in ``schemas/``) and
  :mod:`~gateway.matching.encoding` (tokenisers, HKDF per-field keys, keyed-BLAKE2b double hashing into
  1024-bit filters held as NumPy ``uint64`` arrays) and :mod:`~gateway.matching.plausibility` (which filters
  the gateway refuses: empty or too dense — the partner's client applies the same rule before sending);
* gateway side: :mod:`~gateway.matching.similarity` (Sørensen-Dice in compiled numba kernels, length-filter
  pruning), :mod:`~gateway.matching.blocking` (LSH on bit samples), :mod:`~gateway.matching.solving` (greedy
  1-to-1) and :mod:`~gateway.matching.linkage` (the pipeline). Results are groups of
  ``(dataset, record index)``; similarity scores never leave the gateway.

The CLK secret belongs to the partnership's participants; the gateway that compares filters never has it, so
it cannot run a dictionary attack on the filters' tokens. This ``__init__`` deliberately imports nothing.
"""
