"""Fixtures: a real PostgreSQL (throwaway embedded, or TEST_DATABASE_URL), the app, an HTTP client."""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.auth import SCOPES, create_api_key
from services.settings import Settings

# The three services as processes (fixtures `stack`, `service_keys`), for any test that needs them.
pytest_plugins = ("tests.stack",)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        from services.migrate import upgrade

        upgrade(url)
        yield url
        return
    from services.migrate import upgrade
    from services.pg import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="jifen-test-"))
    server = EmbeddedPostgres(tmp / "pgdata", delete_on_stop=True)
    server.start()
    server.ensure_database("jifen_test")
    url = server.url("jifen_test")
    upgrade(url)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        access_log=False,
        hold_sweep_interval_s=0.2,
        webhook_interval_s=0.1,
        expiry_interval_s=3600,
        tier_review_interval_s=3600,
        batch_interval_s=3600,  # batch tests drive the processor themselves
        db_pool_size=20,
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
async def ledger_app(test_settings: Settings) -> AsyncIterator[Any]:
    from ledger_service.app import create_app

    app = create_app(test_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def admin_key(ledger_app: Any) -> str:
    _, secret = await create_api_key(ledger_app.state.db, name="test-admin", scopes=SCOPES)
    return secret


@pytest.fixture(scope="session")
async def raw_client(ledger_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ledger_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger", timeout=30) as client:
        yield client


@pytest.fixture
async def client(raw_client: httpx.AsyncClient, admin_key: str) -> httpx.AsyncClient:
    raw_client.headers["Authorization"] = f"Bearer {admin_key}"
    return raw_client


def unique_code(prefix: str = "T") -> str:
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9))


def new_key() -> str:
    return secrets.token_hex(12)


async def make_key(app: Any, scopes: list[str], programs: list[str] | None = None) -> str:
    _, secret = await create_api_key(app.state.db, name="test", scopes=scopes, programs=programs)
    return secret


@pytest.fixture
async def program(client: httpx.AsyncClient) -> str:
    return await create_program(client)


async def create_program(client: httpx.AsyncClient, **overrides: Any) -> str:
    body = {
        "code": unique_code(),
        "name": "Test program",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
        **overrides,
    }
    r = await client.post("/v1/programs", json=body)
    assert r.status_code == 201, r.text
    return str(body["code"])


async def fetch_value(app: Any, sql: str, *args: Any) -> Any:
    """One value read straight from the ledger's database (what the API does not show)."""
    async with app.state.db.driver() as conn:
        return await conn.fetchval(sql, *args)


async def put_rules(client: httpx.AsyncClient, program: str, **rule_set: Any) -> None:
    """Publishes the program's earning rules (`base`, `caps`, `rules`, ...), in force since 2020."""
    body = {"effective_from": "2020-01-01T00:00:00Z", **rule_set}
    r = await client.post(f"/v1/programs/{program}/rules", json=body)
    assert r.status_code == 201, r.text


async def post(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    auth: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": key or new_key()}
    if auth is not None:
        headers["Authorization"] = f"Bearer {auth}"
    return await client.post(path, json=body, headers=headers)


async def move(
    client: httpx.AsyncClient, op: str, program: str, member: str, points: int, **extra: Any
) -> dict[str, Any]:
    """A successful `POST /v1/{op}` (earn, burn, ...) with a fresh Idempotency-Key."""
    body = {"program": program, "member_ref": member, "points": points, "reference": "test", **extra}
    r = await post(client, f"/v1/{op}", body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def earn(
    client: httpx.AsyncClient, program: str, member: str, points: int, **extra: Any
) -> dict[str, Any]:
    return await move(client, "earn", program, member, points, **extra)


async def member(client: httpx.AsyncClient, program: str, member_ref: str) -> dict[str, Any]:
    r = await client.get(f"/v1/programs/{program}/members/{member_ref}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    return body


@pytest.fixture(scope="session")
def live_ledger(database_url: str) -> Iterator[Any]:
    """The ledger as a real process on a loopback port, for other services to call over HTTP."""
    from tests.harness import ServiceProcess

    ledger = ServiceProcess("ledger", database_url, env={"JIFEN_HOLD_SWEEP_INTERVAL_S": "0.2"}).start()
    try:
        yield ledger
    finally:
        ledger.stop()
