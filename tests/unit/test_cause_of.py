"""``gateway.errors.cause_of``: how a wrapped failure is told apart from another (a lost race from a broken
database) — it must follow what was raised *from*, never what merely happened nearby."""

from __future__ import annotations

import pytest

from gateway.errors import cause_of


class _Fault(Exception):
    pass


class _Wrapper(Exception):
    pass


def _wrapped(depth: int) -> _Wrapper:
    error: BaseException = _Fault("database gone")
    for _ in range(depth):
        outer = _Wrapper("layer")
        outer.__cause__ = error
        error = outer
    assert isinstance(error, _Wrapper)
    return error


def test_finds_the_fault_any_number_of_layers_down() -> None:
    for depth in (1, 3):
        found = cause_of(_wrapped(depth), _Fault)
        assert isinstance(found, _Fault)
        assert str(found) == "database gone"


def test_the_exception_itself_is_not_its_own_cause() -> None:
    assert cause_of(_Fault("x"), _Fault) is None


def _wrapped_while_handling() -> None:
    try:
        raise _Fault("handled nearby")
    except _Fault as handled:
        raise _Wrapper("unrelated") from handled.__cause__  # explicitly no cause; the context stays


def test_an_implicit_context_is_not_a_cause() -> None:
    with pytest.raises(_Wrapper) as raised:
        _wrapped_while_handling()
    assert raised.value.__context__ is not None
    assert cause_of(raised.value, _Fault) is None


def test_nothing_of_the_kind_in_the_chain() -> None:
    assert cause_of(_wrapped(2), KeyError) is None
