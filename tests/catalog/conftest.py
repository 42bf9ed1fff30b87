"""Fixtures for the catalog: its own ledger key, the catalog as a real process talking to the live
ledger over HTTP, and HTTP clients for both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.auth import SCOPES, create_api_key
from services.db import Database
from services.keyfiles import SERVICE_LEDGER_SCOPES
from tests.catalog.helpers import KEEPALIVE_S, catalog_env, new_program
from tests.harness import ServiceProcess, api_client


@pytest.fixture(scope="session")
async def catalog_db(database_url: str) -> AsyncIterator[Database]:
    """A small pool for the tests' own SQL (keys, invariants)."""
    db = Database(database_url, pool_size=4, application_name="catalog-tests")
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
async def catalog_admin_key(catalog_db: Database) -> str:
    _, secret = await create_api_key(catalog_db, name="catalog-test-admin", scopes=SCOPES)
    return secret


@pytest.fixture(scope="session")
async def catalog_ledger_key(catalog_db: Database) -> str:
    """The catalog's own ledger key, with only the scopes a catalog gets from `jifen run`."""
    _, secret = await create_api_key(
        catalog_db, name="catalog-service", scopes=SERVICE_LEDGER_SCOPES["catalog"]
    )
    return secret


@pytest.fixture(scope="session")
def live_catalog(
    database_url: str, live_ledger: ServiceProcess, catalog_ledger_key: str
) -> Iterator[ServiceProcess]:
    catalog = ServiceProcess("catalog", database_url, env=catalog_env(live_ledger.url, catalog_ledger_key))
    catalog.start()
    try:
        yield catalog
    finally:
        catalog.stop()


@pytest.fixture(scope="session")
async def ledger_http(
    live_ledger: ServiceProcess, catalog_admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
    async with api_client(live_ledger.url, catalog_admin_key, limits=limits) as client:
        yield client


@pytest.fixture(scope="session")
async def catalog_http(
    live_catalog: ServiceProcess, catalog_admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250, keepalive_expiry=KEEPALIVE_S)
    async with api_client(live_catalog.url, catalog_admin_key, limits=limits) as client:
        yield client


@pytest.fixture
async def program(ledger_http: httpx.AsyncClient) -> str:
    """A new ledger program for the test (the ledger is shared by the session)."""
    return await new_program(ledger_http)
