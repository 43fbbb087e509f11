"""A variable set in this process's environment for what it starts inside a block, and put back afterwards.

Why: ``serve`` tells the server processes it starts (uvicorn's workers inherit the environment) what it checked
and how it runs them; the variable must not outlive ``serve``'s call, in a test process or any other caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` while the block runs; as it was (or unset) afterwards, however it ends."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
