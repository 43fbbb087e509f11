"""Unit tests of gateway.matching (pure; no database, no HTTP)."""
