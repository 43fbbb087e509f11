"""The password-check slots: never more checks in worker threads at once than there are slots, and a check that
gets none within the wait is refused (429 with Retry-After) without running."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.auth.password_checks import PasswordChecks, PasswordChecksBusy


async def test_no_more_checks_run_at_once_than_there_are_slots() -> None:
    checks = PasswordChecks(slots=2, wait_seconds=10)
    lock = threading.Lock()
    running, most = 0, 0

    def check() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    await asyncio.gather(*(checks.run(check) for _ in range(8)))
    assert most == 2


async def test_a_check_that_gets_no_slot_in_time_is_refused_without_running() -> None:
    checks = PasswordChecks(slots=1, wait_seconds=0.1)
    release = threading.Event()
    ran: list[str] = []
    holder = asyncio.create_task(checks.run(lambda: release.wait(5)))
    await asyncio.sleep(0.01)
    with pytest.raises(PasswordChecksBusy) as refused:
        await checks.run(lambda: ran.append("checked"))
    release.set()
    await holder
    assert ran == []
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "1"}
    assert await checks.run(lambda: "free again") == "free again"  # the refusal took no slot with it
