"""The saga when things go wrong, over real HTTP between processes: the ledger down during the credit
and back later, and the conversion service killed between the debit and the credit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from services.errors import LEDGER_RETRY_AFTER_S
from tests.conftest import assert_problem, new_key
from tests.conversion.conftest import conversion_process
from tests.conversion.helpers import balance, convert, events, fund, program, put_rate, wait_status
from tests.conversion.invariants import check_conversion_invariants
from tests.harness import ServiceProcess


def _client(url: str, admin_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)


async def _only(conv: httpx.AsyncClient, member: str) -> dict[str, Any]:
    listed = (await conv.get("/v1/conversions", params={"member_ref": member})).json()["data"]
    assert len(listed) <= 1, listed
    return listed[0] if listed else {}


async def _legs(db, conversion_id: str) -> list[tuple[str, str, int]]:
    async with db.driver() as conn:
        rows = await conn.fetch(
            "SELECT p.code, t.type, t.points FROM ledger.transactions t JOIN ledger.programs p"
            " ON p.id = t.program_id WHERE t.reference = $1 ORDER BY t.type",
            conversion_id,
        )
    return [(r["code"], r["type"], r["points"]) for r in rows]


async def _pair(
    conv: httpx.AsyncClient, ledger: httpx.AsyncClient, member: str, funded: int
) -> tuple[str, str, dict[str, Any]]:
    """Two programs at 5:1 with a 200 bps fee, the member funded; the body converting 5,000 points."""
    src, dst = await program(ledger), await program(ledger)
    await put_rate(conv, src, dst, from_points=5, to_points=1, fee_bps=200, min_from_points=1)
    await fund(ledger, src, member, funded)
    return src, dst, {"from_program": src, "to_program": dst, "member_ref": member, "from_points": 5000}


async def test_ledger_down_during_the_credit_then_back(
    database_url: str,
    conversion_ledger_key: str,
    admin_key: str,
    conv_http: httpx.AsyncClient,
    ledger_http: httpx.AsyncClient,
    db,
) -> None:
    src, dst, body = await _pair(conv_http, ledger_http, "m-down", 6000)
    key = new_key()

    # A second ledger process of our own (same database), and a conversion process that reaches the
    # ledger only through it and pauses (test-only fault) between the debit and the credit.
    ledger2 = await asyncio.to_thread(ServiceProcess("ledger", database_url).start)
    conv2: ServiceProcess | None = None
    try:
        conv2 = await asyncio.to_thread(
            conversion_process(
                database_url, ledger2.url, conversion_ledger_key, JIFEN_CONVERSION_FAULT="pause_after_debit:3"
            ).start
        )
        async with _client(conv2.url, admin_key) as c2:
            request = asyncio.create_task(convert(c2, body, key))
            deadline = time.monotonic() + 20
            while (await _only(conv_http, "m-down")).get("status") != "debited":
                assert time.monotonic() < deadline and not request.done(), "the debit was never stored"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(ledger2.stop)  # the ledger goes down before the credit

            r = await request
            assert r.status_code == 202, r.text
            pending = r.json()
            assert pending["status"] == "crediting"
            assert pending["next_attempt_at"] is not None
            assert events(pending)[-1] == "retry_scheduled"
            # while the ledger is down: debited, not credited; recovery keeps retrying with backoff
            await asyncio.sleep(1.5)
            still = await wait_status(c2, pending["id"], {"crediting"})
            assert still["attempts"] >= 2, still
            assert await balance(ledger_http, src, "m-down") == 1000
            assert await balance(ledger_http, dst, "m-down") == 0
            replay = await convert(c2, body, key)
            assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
            # what needs the ledger now answers as in every service: 503 ledger_unavailable, one Retry-After
            # (the program cache, 1 s here, has run out)
            valuation = await c2.post("/v1/valuations", json={"program": src, "points": 500})
            assert_problem(valuation, 503, "ledger_unavailable")
            assert valuation.headers["Retry-After"] == str(LEDGER_RETRY_AFTER_S)

            await asyncio.to_thread(ledger2.start)  # back on the same port: recovery completes it
            done = await wait_status(c2, pending["id"], {"completed"}, timeout_s=30)
            assert (done["from_points"], done["fee_points"], done["to_points"]) == (5000, 100, 980)
            assert events(done)[:4] == ["created", "debiting", "debited", "crediting"]
            assert events(done)[-1] == "completed" and set(events(done)[4:-1]) == {"retry_scheduled"}
            replay = await convert(c2, body, key)
            assert replay.status_code == 201 and replay.json() == done
    finally:
        if conv2 is not None:
            await asyncio.to_thread(conv2.stop)
        await asyncio.to_thread(ledger2.stop)

    assert await balance(ledger_http, src, "m-down") == 1000
    assert await balance(ledger_http, dst, "m-down") == 980
    assert await _legs(db, done["id"]) == [(src, "burn", 5000), (dst, "earn", 980)]
    await check_conversion_invariants(db)


async def test_killed_between_debit_and_credit_then_restarted(
    database_url: str,
    live_ledger: Any,
    conversion_ledger_key: str,
    admin_key: str,
    conv_http: httpx.AsyncClient,
    ledger_http: httpx.AsyncClient,
    db,
) -> None:
    src, dst, body = await _pair(conv_http, ledger_http, "m-kill", 5000)
    key = new_key()

    crashing = await asyncio.to_thread(
        conversion_process(
            database_url, live_ledger.url, conversion_ledger_key, JIFEN_CONVERSION_FAULT="crash_after_debit"
        ).start
    )
    try:
        async with _client(crashing.url, admin_key) as c:
            with pytest.raises(httpx.TransportError):
                await convert(c, body, key)  # the process dies right after storing the debit
        assert crashing.proc is not None
        await asyncio.to_thread(crashing.proc.wait, 10)
    finally:
        await asyncio.to_thread(crashing.kill)

    stranded = await _only(conv_http, "m-kill")
    assert stranded["status"] == "debited", stranded
    assert await balance(ledger_http, src, "m-kill") == 0
    assert await balance(ledger_http, dst, "m-kill") == 0

    restarted = await asyncio.to_thread(
        conversion_process(database_url, live_ledger.url, conversion_ledger_key).start
    )
    try:
        async with _client(restarted.url, admin_key) as c:
            done = await wait_status(c, stranded["id"], {"completed"}, timeout_s=30)
            # the replay of the request that never got an answer now answers with the outcome
            replay = await convert(c, body, key)
            assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
            assert replay.json() == done
    finally:
        await asyncio.to_thread(restarted.stop)

    assert events(done) == ["created", "debiting", "debited", "crediting", "completed"]
    # exactly once: one debit, one credit, the exact amounts
    assert await _legs(db, done["id"]) == [(src, "burn", 5000), (dst, "earn", 980)]
    assert await balance(ledger_http, src, "m-kill") == 0
    assert await balance(ledger_http, dst, "m-kill") == 980
    await check_conversion_invariants(db)
