"""The three services as real processes on loopback ports, once per test session, over the session's
database: for the browser tests (the console, /docs) and the OpenAPI tests (examples, conformance).
tests/conftest.py loads these fixtures for every test (pytest_plugins)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.auth import create_api_key
from services.keyfiles import SERVICE_LEDGER_SCOPES
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
