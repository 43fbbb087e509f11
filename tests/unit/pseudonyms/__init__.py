"""Unit tests of gateway.pseudonyms (pure; no database, no HTTP)."""
