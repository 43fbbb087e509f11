"""The rules that keep a participant's stored CLK key id describing its current filters
(:mod:`gateway.enrolment.clk_keys`)."""

from __future__ import annotations

import pytest

from gateway.enrolment.clk_keys import ClkKeyMismatch, after_batch, check_addition, comparable

A, B = "a" * 32, "b" * 32


def test_an_addition_of_another_known_key_is_refused_and_nothing_else() -> None:
    with pytest.raises(ClkKeyMismatch) as refused:
        check_addition(A, B, adds=True)
    assert refused.value.status == 422
    assert refused.value.slug == "clk-key-mismatch"
    check_addition(A, A, adds=True)
    check_addition(A, B, adds=False)  # withdrawals alone: no filter of B enrolled
    check_addition(None, B, adds=True)  # unknown: accepted as before
    check_addition(A, None, adds=True)  # a client that does not say


@pytest.mark.parametrize(("current", "key", "options", "after"), [
    (A, B, {"whole": True, "held_before": 5, "held_after": 3, "adds": True}, B),  # a rotation
    (A, B, {"whole": False, "held_before": 0, "held_after": 3, "adds": True}, B),  # an empty set takes the batch's
    (A, A, {"whole": False, "held_before": 5, "held_after": 6, "adds": True}, A),
    (A, None, {"whole": False, "held_before": 5, "held_after": 6, "adds": True}, None),  # unknown added: unknown
    (None, A, {"whole": False, "held_before": 5, "held_after": 6, "adds": True}, None),  # unknown rows stay
    (A, B, {"whole": False, "held_before": 5, "held_after": 4, "adds": False}, A),  # withdrawals keep it
    (A, A, {"whole": False, "held_before": 5, "held_after": 0, "adds": False}, None),  # none held: nothing known
])
def test_the_stored_key_id_follows_the_set(current: str | None, key: str | None, options: dict[str, object],
                                           after: str | None) -> None:
    assert after_batch(current, key, **options) == after  # type: ignore[arg-type]


def test_only_two_known_different_key_ids_are_not_comparable() -> None:
    held = {"politie": A}
    assert not comparable(B, held, "politie")
    assert comparable(A, held, "politie")
    assert comparable(B, held, "belastingdienst")  # unknown
    assert comparable(None, held, "politie")  # the request does not say
