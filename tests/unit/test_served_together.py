"""``served_together``: a request's targets at once, none outliving the request when one fails or when the
request is cancelled; the failure raised is the one that happened, not the cancellation it caused."""

from __future__ import annotations

import asyncio

import pytest

from gateway.exchange.siblings import served_together


class _Held:
    """A call held until released (or cancelled), saying how it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.ended: str | None = None

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise
        self.ended = "answered"
        return "held"


async def _answer(value: str) -> str:
    return value


async def test_every_answer_in_call_order() -> None:
    held = _Held()
    held.release.set()
    assert await served_together([held(), _answer("b"), _answer("c")]) == ["held", "b", "c"]


async def test_one_call_is_awaited_in_the_callers_task() -> None:
    caller = asyncio.current_task()

    async def which_task() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    assert await served_together([which_task()]) == [caller]


@pytest.mark.parametrize("failure", [LookupError("defect"), asyncio.CancelledError()], ids=["defect", "cancelled"])
async def test_a_failure_ends_the_others_before_it_is_raised(failure: BaseException) -> None:
    held = _Held()

    async def failing() -> str:
        await held.started.wait()
        raise failure

    with pytest.raises(type(failure)):
        await served_together([held(), failing()])  # the held call first: its cancellation is not what is raised
    assert held.ended == "cancelled"


async def test_a_cancelled_request_waits_for_its_calls_to_end() -> None:
    held = _Held()
    never_done = asyncio.Event()
    ended: list[str] = []

    async def stubborn() -> str:
        """Ends only some loop iterations after its cancellation (a holder call cleaning up)."""
        try:
            await never_done.wait()
        except asyncio.CancelledError:
            for _ in range(5):
                await asyncio.sleep(0)
            ended.append("stubborn")
            raise
        return "never"

    request = asyncio.ensure_future(served_together([held(), stubborn()]))
    await held.started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert held.ended == "cancelled"
    assert ended == ["stubborn"]  # ended some iterations after its cancellation, before the request did
