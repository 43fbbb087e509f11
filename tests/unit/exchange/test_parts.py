"""A target's question in parts (``gateway.exchange.parts``): how it is cut, how the parts are named, and which
failure decides the target. The exchange's use of them is in ``tests/scenarios/test_rotation_parts.py``."""

from __future__ import annotations

import asyncio

import pytest

from connectors.protocol import MAX_SUBJECTS, HolderRejectedRequest, HolderUnavailable
from gateway.client.models import ExchangeRequest
from gateway.exchange.parts import asked_together, failure_of, in_parts, part_request_ids


def test_a_question_that_fits_one_query_is_one_part_asked_as_before() -> None:
    asked = [f"p{n}" for n in range(MAX_SUBJECTS)]
    assert in_parts(asked) == [asked]
    assert part_request_ids("x:kvk", 1) == ["x:kvk"]


def test_a_larger_question_is_cut_in_order_into_parts_of_at_most_max_subjects() -> None:
    asked = [f"p{n}" for n in range(2 * MAX_SUBJECTS + 1)]
    parts = in_parts(asked)
    assert [len(p) for p in parts] == [MAX_SUBJECTS, MAX_SUBJECTS, 1]
    assert [p for part in parts for p in part] == asked  # the current version's pseudonyms stay in front
    assert part_request_ids("x:kvk", 3) == ["x:kvk", "x:kvk:2", "x:kvk:3"]


def test_every_subject_of_a_request_fits_the_first_part() -> None:
    """What the parts rely on (``parts``' docstring): a request names no more subjects than one holder query,
    so the first part holds every subject's current pseudonym and the provided records go with it. Raising the
    request's limit alone would send provided records about subjects that part does not ask about."""
    limits = [getattr(m, "max_length", None) for m in ExchangeRequest.model_fields["subjects"].metadata]
    assert [limit for limit in limits if limit is not None] == [MAX_SUBJECTS]


async def test_every_part_is_awaited_and_its_failure_kept_in_part_order() -> None:
    done: list[str] = []

    async def answer(name: str) -> str:
        await asyncio.sleep(0)
        done.append(name)
        return name

    async def fail() -> str:
        raise HolderUnavailable("kvk-handelsregister", "down")

    results = await asked_together([fail(), answer("second")])
    assert isinstance(results[0], HolderUnavailable)
    assert results[1] == "second"
    assert done == ["second"]  # awaited although the first part had failed already


async def test_a_cancelled_part_is_not_taken_for_an_answer() -> None:
    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asked_together([cancelled()])


def test_a_defect_decides_before_a_holder_failure_and_the_first_failure_before_a_later_one() -> None:
    first = HolderRejectedRequest("kvk-handelsregister", "refused the call with 403", 403)
    later = HolderUnavailable("kvk-handelsregister", "down")
    defect = ValueError("a defect of the gateway's")
    assert failure_of(["answered", first, later]) is first
    assert failure_of([first, later, defect]) is defect  # failed closed as the gateway's own failure
    assert failure_of(["answered", "answered"]) is None
