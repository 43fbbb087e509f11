"""The partner client's public surface as a partner's developer meets it under ``mypy --strict``: every
public method annotated in full and documented, and the options typed as broadly as they work (a
``timeout`` with the phases set apart is an ``httpx.Timeout``, which the client always accepted at run time
but its annotation refused)."""

from __future__ import annotations

import inspect
import pickle
import typing
from collections.abc import Callable

import httpx
import pytest

from gateway.client import errors
from gateway.client.api import GatewayClient

PUBLIC = [member for name, member in inspect.getmembers(GatewayClient, inspect.isfunction)
          if not name.startswith("_") or name == "__init__"]


@pytest.mark.parametrize("method", PUBLIC, ids=lambda method: method.__name__)
def test_every_public_method_is_annotated_in_full_and_documented(method: Callable[..., object]) -> None:
    signature = inspect.signature(method)
    unannotated = [name for name, parameter in signature.parameters.items()
                   if name != "self" and parameter.annotation is inspect.Parameter.empty]
    assert unannotated == []
    assert signature.return_annotation is not inspect.Signature.empty
    assert method.__doc__, f"{method.__name__} has no docstring of its own"


def test_the_client_and_its_errors_are_documented() -> None:
    assert inspect.getdoc(GatewayClient)
    for name in ("type", "title", "detail", "instance"):
        assert inspect.getdoc(getattr(errors.GatewayClientError, name)), name


def test_a_timeout_with_its_phases_set_apart_is_a_typed_option() -> None:
    accepted = typing.get_args(typing.get_type_hints(GatewayClient.__init__)["timeout"])
    assert float in accepted
    assert httpx.Timeout in accepted


@pytest.mark.parametrize("error", [
    errors.GatewayClientError(422, {"type": "t", "title": "Request validation failed", "detail": "x: too short"},
                              idempotency_key="sys-a:k", request_id="0123456789abcdef-2"),
    errors.GatewayUnavailable(503, {"title": "Service unavailable"}, retry_after=2.0, request_id="r-1"),
    errors.GatewayThrottled(429, {}, retry_after=1.0),
    errors.GatewayBusy(409, {"detail": "still being answered"}, retry_after=1.0),
    errors.InvalidResponse(200, {"title": "invalid answer from the gateway"}),
    errors.UnopenablePseudonym(200, {"title": "invalid answer from the gateway"}, index=3, request_id="r-2"),
], ids=lambda error: type(error).__name__)
def test_an_error_crosses_a_process_boundary_whole(error: errors.GatewayClientError) -> None:
    """A partner's worker pool or task queue pickles the exception of a failed call; it arrives as the same
    typed error, not as a TypeError from its constructor."""
    arrived = pickle.loads(pickle.dumps(error))
    assert type(arrived) is type(error)
    assert vars(arrived) == vars(error)
    assert str(arrived) == str(error)
