"""Pseudonym service of the gateway: hands participants their own pseudonyms, keeps the hit/no-hit index."""
