"""The services as real processes for the browser tests: the ledger the console is served by, and
the conversion and catalog services whose sagas it reads (and whose /docs are checked)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.auth import SCOPES, create_api_key
from services.keyfiles import SERVICE_LEDGER_SCOPES
from tests.browser import browser  # noqa: F401 (the session's one browser)
from tests.console.forms import BASE
from tests.harness import ServiceProcess, free_port


@dataclass
class Stack:
    ledger: ServiceProcess
    conversion: ServiceProcess
    catalog: ServiceProcess


@pytest.fixture(scope="session")
async def service_keys(ledger_app: Any) -> dict[str, str]:
    keys = {}
    for service, scopes in SERVICE_LEDGER_SCOPES.items():
        _, keys[service] = await create_api_key(
            ledger_app.state.db, name=f"{service}-console-test", scopes=scopes
        )
    return keys


@pytest.fixture(scope="session")
def stack(
    database_url: str, service_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = str(tmp_path_factory.mktemp("console-data"))
    ports = {s: free_port() for s in ("ledger", "conversion", "catalog")}
    ledger_url = f"http://127.0.0.1:{ports['ledger']}"
    common = {"JIFEN_DATA_DIR": data_dir}
    ledger = ServiceProcess(
        "ledger",
        database_url,
        port=ports["ledger"],
        env={
            **common,
            # the tests drive the batch processor themselves, to follow a batch that is still running
            "JIFEN_BATCH_INTERVAL_S": "3600",
            "JIFEN_CONVERSION_URL": f"http://127.0.0.1:{ports['conversion']}",
            "JIFEN_CATALOG_URL": f"http://127.0.0.1:{ports['catalog']}",
        },
    )
    # the services whose sagas the console reads: their recovery loops wait for the tests
    conversion, catalog = (
        ServiceProcess(
            name,
            database_url,
            port=ports[name],
            env={
                **common,
                "JIFEN_LEDGER_URL": ledger_url,
                "JIFEN_LEDGER_API_KEY": service_keys[name],
                f"JIFEN_{name.upper()}_RECOVERY_INTERVAL_S": "3600",
            },
        )
        for name in ("conversion", "catalog")
    )
    started: list[ServiceProcess] = []
    try:
        for service in (ledger, conversion, catalog):
            started.append(service.start())
        yield Stack(ledger, conversion, catalog)
    finally:
        for service in reversed(started):
            service.stop()


@pytest.fixture(scope="session")
async def console_admin_key(ledger_app: Any) -> str:
    _, secret = await create_api_key(ledger_app.state.db, name="console-admin", scopes=SCOPES)
    return secret


@pytest.fixture
async def console(ledger_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The console over HTTP, in process (no browser); its cookies are the session."""
    transport = httpx.ASGITransport(app=ledger_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30) as c:
        yield c


@pytest.fixture
async def api(stack: Stack, console_admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The ledger process's API, as an admin: to set up data and to check the console against."""
    async with httpx.AsyncClient(
        base_url=stack.ledger.url, headers={"Authorization": f"Bearer {console_admin_key}"}, timeout=30
    ) as client:
        yield client
