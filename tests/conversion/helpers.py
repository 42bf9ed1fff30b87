"""Plain helpers for the conversion tests: programs and points through the ledger, rates and
conversions through the conversion service, all over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import create_program, move, new_key, unique_code


async def program(ledger: httpx.AsyncClient, points: int = 100, cash_minor: int = 100, **extra: Any) -> str:
    return await create_program(
        ledger,
        code=unique_code("C"),
        cash_value={"points": points, "cash_minor": cash_minor, "currency": "CNY"},
        **extra,
    )


async def fund(ledger: httpx.AsyncClient, program: str, member: str, points: int) -> None:
    await move(ledger, "earn", program, member, points, reference="fund")


async def balance(ledger: httpx.AsyncClient, program: str, member: str) -> int:
    r = await ledger.get(f"/v1/programs/{program}/members/{member}")
    if r.status_code == 404:
        return 0
    assert r.status_code == 200, r.text
    return int(r.json()["balance"])


async def put_rate(conv: httpx.AsyncClient, src: str, dst: str, **body: Any) -> dict[str, Any]:
    payload = {"from_points": 5, "to_points": 1, "fee_bps": 200, "min_from_points": 100, **body}
    r = await conv.put(f"/v1/rates/{src}/{dst}", json=payload)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def rated_pair(conv: httpx.AsyncClient, ledger: httpx.AsyncClient, **rate: Any) -> tuple[str, str]:
    """Two new programs and a direct rate from the first to the second (put_rate's fields)."""
    src, dst = await program(ledger), await program(ledger)
    await put_rate(conv, src, dst, **rate)
    return src, dst


async def convert(conv: httpx.AsyncClient, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return await conv.post("/v1/conversions", json=body, headers={"Idempotency-Key": key or new_key()})


async def wait_status(
    conv: httpx.AsyncClient, conversion_id: str, statuses: set[str], timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = await conv.get(f"/v1/conversions/{conversion_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"conversion stuck in {body['status']}: {body}")
        await asyncio.sleep(0.1)


def events(conversion: dict[str, Any]) -> list[str]:
    return [e["event"] for e in conversion["history"]]
