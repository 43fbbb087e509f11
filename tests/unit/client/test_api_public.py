"""The partner client's public surface as a partner's developer meets it under ``mypy --strict``: every
public method annotated in full and documented, and the options typed as broadly as they work (a
``timeout`` with the phases set apart is an ``httpx.Timeout``, which the client always accepted at run time
but its annotation refused)."""

from __future__ import annotations

import inspect
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
