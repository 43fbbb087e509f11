"""The matching package's exception tree.

    MatchingError             base; never raised directly
    ├── SchemaError           a linkage schema file is malformed or asks for something unsupported
    └── EncodingError         records or encoded filters cannot be used (wrong shape, length, base64)

Messages name schema fields, record positions and sizes; they never contain record values, secrets or
filter bits. This package knows nothing of HTTP.
"""

from __future__ import annotations


class MatchingError(Exception):
    """Base of every error raised by ``gateway.matching``."""


class SchemaError(MatchingError, ValueError):
    """A linkage schema is invalid."""


class EncodingError(MatchingError, ValueError):
    """Input to encoding or linkage has the wrong shape or format."""
