"""The background-job runner every service's housekeeping uses."""

from __future__ import annotations

import asyncio

from services.periodic import Periodic


async def test_a_failing_job_is_retried_and_stop_cancels_every_job() -> None:
    calls = {"flaky": 0, "steady": 0}

    async def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("first run fails")
        return 1

    async def steady() -> None:
        calls["steady"] += 1

    periodic = Periodic("test", [("flaky", 0.01, flaky), ("steady", 0.01, steady)])
    periodic.start()
    for _ in range(200):
        if calls["flaky"] >= 3 and calls["steady"] >= 3:
            break
        await asyncio.sleep(0.01)
    await periodic.stop()
    assert calls["flaky"] >= 3 and calls["steady"] >= 3  # the failure did not stop its job
    after = dict(calls)
    await asyncio.sleep(0.05)
    assert calls == after  # nothing runs after stop
