"""Hypothesis strategies shared by the pseudonym tests."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.pseudonyms.pep import Scalar

_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


def _with_check_digit(first8: list[int]) -> str | None:
    check = sum(w * d for w, d in zip(_WEIGHTS, first8, strict=True)) % 11
    if check == 10:
        return None
    digits = "".join(map(str, first8)) + str(check)
    return None if digits == "000000000" else digits


valid_bsns = (st.lists(st.integers(0, 9), min_size=8, max_size=8)
              .map(_with_check_digit).filter(lambda d: d is not None).map(str))
"""9-digit strings that pass the eleven-test (constructed, not filtered from random numbers)."""

def _nonzero_scalar(data: bytes) -> Scalar | None:
    try:
        return Scalar.from_wide(data)
    except ValueError:  # reduced to zero
        return None


scalars = st.binary(min_size=64, max_size=64).map(_nonzero_scalar).filter(lambda s: s is not None)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
