"""Plain factory functions for the catalog tests: programs and points through the ledger's HTTP API,
rewards, codes and redemptions through the catalog's."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.auth import create_api_key
from services.db import Database
from tests.conftest import assert_problem, move, new_key, post, unique_code
from tests.harness import api_client

__all__ = ["assert_problem", "new_key", "unique_code"]

# Idle client connections are dropped well before uvicorn's 5 s keep-alive timeout closes them, so a
# request never goes out on a connection the server is closing at that very moment.
KEEPALIVE_S = 1.0


# Short leases and retries, so crash and outage tests resume sagas within seconds.
FAST_SAGAS = {
    "JIFEN_CATALOG_SAGA_LEASE_S": "1",
    "JIFEN_CATALOG_RETRY_S": "0.3",
    "JIFEN_CATALOG_RETRY_MAX_S": "1",
    "JIFEN_CATALOG_RECOVERY_INTERVAL_S": "0.3",
}


def client(base_url: str, key: str) -> httpx.AsyncClient:
    return api_client(base_url, key, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))


def catalog_env(ledger_url: str, ledger_key: str, **extra: str) -> dict[str, str]:
    env = {"JIFEN_LEDGER_URL": ledger_url, "JIFEN_LEDGER_API_KEY": ledger_key, **extra}
    return env


async def new_program(ledger: httpx.AsyncClient) -> str:
    code = unique_code("C")
    body = {
        "code": code,
        "name": "Catalog test",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
    }
    r = await ledger.post("/v1/programs", json=body)
    assert r.status_code == 201, r.text
    return code


async def earn(ledger: httpx.AsyncClient, program: str, member: str, points: int) -> None:
    await move(ledger, "earn", program, member, points)


async def burn(ledger: httpx.AsyncClient, program: str, member: str, points: int) -> None:
    await move(ledger, "burn", program, member, points)


async def balance(ledger: httpx.AsyncClient, program: str, member: str) -> dict[str, Any]:
    r = await ledger.get(f"/v1/programs/{program}/members/{member}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def new_sku(prefix: str = "SKU") -> str:
    return f"{prefix}-{secrets.token_hex(5).upper()}"


async def create_reward(catalog: httpx.AsyncClient, program: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "sku": new_sku(),
        "name": "Tall latte e-coupon",
        "type": "physical",
        "program": program,
        "price_points": 100,
        **overrides,
    }
    r = await catalog.post("/v1/rewards", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def new_codes(n: int) -> list[str]:
    run = uuid.uuid4().hex[:10].upper()
    return [f"CPN-{run}-{i:05d}" for i in range(n)]


async def upload_codes(catalog: httpx.AsyncClient, sku: str, n: int) -> list[str]:
    codes = new_codes(n)
    r = await catalog.post(f"/v1/rewards/{sku}/codes", json={"codes": codes})
    assert r.status_code == 201, r.text
    return codes


async def voucher_reward(
    catalog: httpx.AsyncClient, program: str, codes: int, **overrides: Any
) -> tuple[str, list[str]]:
    """A voucher reward (create_reward's fields) with `codes` codes uploaded: its sku and the codes."""
    reward = await create_reward(catalog, program, type="voucher", **overrides)
    return reward["sku"], await upload_codes(catalog, reward["sku"], codes)


async def redeem(
    catalog: httpx.AsyncClient,
    sku: str,
    program: str,
    member: str,
    quantity: int = 1,
    *,
    key: str | None = None,
    auth: str | None = None,
) -> httpx.Response:
    body = {"sku": sku, "program": program, "member_ref": member, "quantity": quantity}
    return await post(catalog, "/v1/redemptions", body, key=key, auth=auth)


async def cancel(
    catalog: httpx.AsyncClient, redemption_id: str, *, key: str | None = None, auth: str | None = None
) -> httpx.Response:
    path = f"/v1/redemptions/{redemption_id}/cancel"
    return await post(catalog, path, {"reason": "test"}, key=key, auth=auth)


async def get_reward(catalog: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    r = await catalog.get(f"/v1/rewards/{sku}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def get_redemption(catalog: httpx.AsyncClient, redemption_id: str) -> dict[str, Any]:
    r = await catalog.get(f"/v1/redemptions/{redemption_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def make_key(db: Database, scopes: list[str], programs: list[str] | None = None) -> tuple[int, str]:
    return await create_api_key(db, name="catalog-test", scopes=scopes, programs=programs)
