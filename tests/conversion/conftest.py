"""Fixtures for the conversion service: the ledger and the conversion service as real processes on
loopback ports, talking HTTP to each other; clients for both; the database for SQL checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from services.auth import create_api_key
from services.keyfiles import SERVICE_LEDGER_SCOPES
from tests.harness import ServiceProcess, api_client

# Fast retries and recovery, so the failure scenarios finish in seconds.
FAST_SAGA_ENV = {
    "JIFEN_CONVERSION_RECOVERY_INTERVAL_S": "0.3",
    "JIFEN_CONVERSION_RETRY_BASE_S": "0.2",
    "JIFEN_CONVERSION_RETRY_MAX_S": "1.0",
    "JIFEN_CONVERSION_LEASE_S": "3",
    "JIFEN_CONVERSION_LEDGER_ATTEMPTS": "2",
    "JIFEN_CONVERSION_PROGRAM_CACHE_S": "1",
}


@pytest.fixture(scope="session")
def db(ledger_app: Any) -> Any:
    return ledger_app.state.db


@pytest.fixture(scope="session")
async def conversion_ledger_key(ledger_app: Any) -> str:
    """The conversion service's own ledger key: only the scopes the service needs."""
    _, secret = await create_api_key(
        ledger_app.state.db, name="conversion-service-test", scopes=SERVICE_LEDGER_SCOPES["conversion"]
    )
    return secret


def conversion_process(database_url: str, ledger_url: str, ledger_key: str, **env: str) -> ServiceProcess:
    return ServiceProcess(
        "conversion",
        database_url,
        env={"JIFEN_LEDGER_URL": ledger_url, "JIFEN_LEDGER_API_KEY": ledger_key, **FAST_SAGA_ENV, **env},
    )


@pytest.fixture(scope="session")
def live_conversion(
    database_url: str, live_ledger: Any, conversion_ledger_key: str
) -> Iterator[ServiceProcess]:
    # All conversion processes share one database and any of them may resume any conversion. This one's
    # recovery runs at start-up only, so that it leaves the failure scenarios' conversions to the processes
    # those tests start (pointed at a ledger they stop, or crashed on purpose).
    service = conversion_process(
        database_url, live_ledger.url, conversion_ledger_key, JIFEN_CONVERSION_RECOVERY_INTERVAL_S="3600"
    ).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
async def ledger_http(live_ledger: Any, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(live_ledger.url, admin_key, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
async def conv_http(live_conversion: ServiceProcess, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with api_client(live_conversion.url, admin_key, limits=limits) as client:
        yield client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The invariant-5 check runs after every other test, over every conversion they made."""
    last = [i for i in items if i.nodeid.endswith("test_invariant_5_after_all_conversions")]
    items[:] = [i for i in items if i not in last] + last
