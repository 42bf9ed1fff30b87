"""Sagas needing attention, read from the services that own them (conversion, catalog) over HTTP,
with the signed-in operator's own API key: what the console shows is what that key may read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

CONVERSION_UNFINISHED = ("created", "debiting", "debited", "crediting", "compensating")
REDEMPTION_UNFINISHED = ("debiting", "refunding", "cancelling")
TIMEOUT_S = 3.0
PER_STATUS = 50


@dataclass
class SagaList:
    service: str
    base_url: str
    items: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # why the list could not be read, for the page to say


async def _fetch(
    client: httpx.AsyncClient,
    service: str,
    base_url: str,
    path: str,
    statuses: tuple[str, ...],
    headers: dict[str, str],
) -> SagaList:
    out = SagaList(service=service, base_url=base_url)
    try:
        for status in statuses:
            r = await client.get(
                f"{base_url}{path}", params={"status": status, "limit": PER_STATUS}, headers=headers
            )
            if r.status_code in (401, 403):
                out.problem = f"Your API key may not read the {service} service's sagas ({service}:read)."
                return out
            if r.status_code != 200:
                out.problem = f"The {service} service answered {r.status_code}."
                return out
            out.items.extend(r.json()["data"])
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        out.problem = f"The {service} service at {base_url} is unreachable ({type(exc).__name__})."
        out.items = []
    out.items.sort(key=lambda i: str(i.get("created_at")), reverse=True)
    return out


async def unfinished(
    conversion_url: str, catalog_url: str, api_key: str, request_id: str | None
) -> tuple[SagaList, SagaList]:
    headers = {"Authorization": f"Bearer {api_key}"}
    if request_id:
        headers["X-Request-ID"] = request_id
    async with httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False) as client:
        conversions, redemptions = await asyncio.gather(
            _fetch(client, "conversion", conversion_url, "/v1/conversions", CONVERSION_UNFINISHED, headers),
            _fetch(client, "catalog", catalog_url, "/v1/redemptions", REDEMPTION_UNFINISHED, headers),
        )
    return conversions, redemptions


RETRY_PATHS = {"conversion": "/v1/conversions/{id}/retry", "catalog": "/v1/redemptions/{id}/retry"}


async def retry(
    base_url: str, service: str, saga_id: str, api_key: str, request_id: str | None
) -> tuple[int, str]:
    """Asks the owning service to retry a saga now: (HTTP status, what to tell the operator)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    if request_id:
        headers["X-Request-ID"] = request_id
    url = base_url + RETRY_PATHS[service].format(id=saga_id)
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S * 5, trust_env=False) as client:
            r = await client.post(url, headers=headers)
    except httpx.HTTPError as exc:
        return 503, f"The {service} service at {base_url} is unreachable ({type(exc).__name__})."
    if r.status_code == 200:
        return 200, str(r.json().get("status", "retried"))
    try:
        detail = str(r.json().get("detail", r.text[:200]))
    except ValueError:
        detail = r.text[:200]
    return r.status_code, detail
