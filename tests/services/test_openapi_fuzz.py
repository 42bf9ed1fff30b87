"""Issue 12: schemathesis over each service's OpenAPI finds no 5xx (tests/fuzzing.py says how)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from catalog_service import demo as catalog_demo
from conversion_service import demo as conversion_demo
from ledger_service import demo as ledger_demo
from services.auth import SCOPES, create_api_key
from services.db import Database
from services.keyfiles import SERVICE_LEDGER_SCOPES
from tests.fuzzing import run_schemathesis
from tests.harness import ServiceProcess

NAME = "jifen_fuzz"


@pytest.fixture(scope="module")
async def fuzz_stack(database_url: str) -> AsyncIterator[tuple[dict[str, str], str]]:
    from services.migrate import upgrade

    plain = database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(plain)
    await admin.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {NAME}")
    await admin.close()
    base, _, query = database_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + NAME + (f"?{query}" if query else "")
    await asyncio.to_thread(upgrade, url)
    db = Database(url, pool_size=2)
    try:
        # The demo data (WLT, JFB, ICBC, rates, rewards) are the OpenAPI examples' programs, partners
        # and SKUs: with them the examples reach the ledger's writes instead of stopping at a 404.
        for load in (ledger_demo.load_demo, conversion_demo.load_demo, catalog_demo.load_demo):
            await load(db)
        _, key = await create_api_key(db, name="fuzz-admin", scopes=SCOPES)
        service_keys = {
            service: (await create_api_key(db, name=f"fuzz-{service}", scopes=scopes))[1]
            for service, scopes in SERVICE_LEDGER_SCOPES.items()
        }
    finally:
        await db.dispose()
    ledger = ServiceProcess("ledger", url).start()
    others = [
        ServiceProcess(
            service,
            url,
            env={"JIFEN_LEDGER_URL": ledger.url, "JIFEN_LEDGER_API_KEY": service_keys[service]},
        )
        for service in ("conversion", "catalog")
    ]
    try:
        for process in others:
            process.start()
        yield {"ledger": ledger.url, **{p.service: p.url for p in others}}, key
    finally:
        for process in [*others, ledger]:
            process.stop()


@pytest.mark.parametrize("service", ["ledger", "conversion", "catalog"])
async def test_no_input_is_a_server_error(
    fuzz_stack: tuple[dict[str, str], str], service: str, tmp_path: Path
) -> None:
    urls, key = fuzz_stack
    run = await asyncio.to_thread(run_schemathesis, service, urls[service], key, tmp_path)
    print(f"schemathesis {service}: {run.cases} cases, {run.failures} failures")
    assert run.returncode == 0 and run.failures == 0, run.output[-20000:]
    assert run.cases > 0, run.output[-5000:]
