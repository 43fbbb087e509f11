"""Pseudonym service of the gateway: hands participants their own pseudonyms, keeps the hit/no-hit index; and
the fuzzy discovery index of match filters (CLKs) for records without a shared number (``filters``)."""
