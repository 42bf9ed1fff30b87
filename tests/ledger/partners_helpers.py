"""Factories for partner tests: a partner with terms for a program, in one call."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import post, unique_code


async def create_partner(client: httpx.AsyncClient, roles: list[str], **overrides: Any) -> str:
    body = {"code": unique_code("P"), "name": "Test partner", "roles": roles, **overrides}
    r = await client.post("/v1/partners", json=body)
    assert r.status_code == 201, r.text
    return str(body["code"])


async def put_terms(
    client: httpx.AsyncClient, partner: str, program: str, **overrides: Any
) -> dict[str, Any]:
    body = {
        "issue_price": {"points": 100, "cash_minor": 80},
        "accept_price": {"points": 100, "cash_minor": 70},
        "currency": "CNY",
        "period": "daily",
        "funding": "postpaid",
        **overrides,
    }
    r = await client.put(f"/v1/partners/{partner}/terms/{program}", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def partner_with_terms(
    client: httpx.AsyncClient, program: str, roles: list[str] | None = None, **terms: Any
) -> str:
    code = await create_partner(client, roles or ["issuer", "acceptor"])
    await put_terms(client, code, program, **terms)
    return code


async def fund(
    client: httpx.AsyncClient, partner: str, program: str, points: int, cash_minor: int
) -> dict[str, Any]:
    r = await post(
        client,
        f"/v1/partners/{partner}/fundings",
        {"program": program, "points": points, "cash_minor": cash_minor, "reference": "pack"},
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data
