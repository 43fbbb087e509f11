"""Policy errors. Every one of them means *deny* (fail closed) and a 503 for the caller::

    PolicyError
    ├── PolicyUnavailable   engine down, unreachable or slower than its timeout
    └── MalformedDecision   the engine answered something that is not a valid decision document
"""

from __future__ import annotations


class PolicyError(Exception):
    pass


class PolicyUnavailable(PolicyError):
    pass


class MalformedDecision(PolicyError):
    pass
