"""The services as real processes for the browser tests: the ledger the console is served by, and
the conversion and catalog services whose sagas it reads (and whose /docs are checked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.auth import SCOPES, create_api_key
from tests.browser import browser  # noqa: F401 (the session's one browser)
from tests.console.forms import BASE
from tests.harness import api_client
from tests.stack import Stack


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
    async with api_client(stack.ledger.url, console_admin_key, timeout=30) as client:
        yield client
