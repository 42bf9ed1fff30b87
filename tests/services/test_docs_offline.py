"""/docs and /redoc work with no network: the pages and every asset they reference are served by the
service itself (fastapi-offline's bundled Swagger UI and ReDoc), and `/` leads to /docs.
What the page then loads at run time is checked in a real browser (tests/console/test_browser.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from services.settings import Settings

SERVICES = ("ledger", "conversion", "catalog")
BASE = "http://service.test"
# src= / href= in the HTML, url(...) in CSS, and the JS that points Swagger UI or ReDoc at a document.
REFS = re.compile(
    r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)["']?\s*\)|url:\s*'([^']+)'"""
)


@pytest.fixture(params=SERVICES)
async def docs_client(
    request: pytest.FixtureRequest, test_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    module: Any = __import__(f"{request.param}_service.app", fromlist=["create_app"])
    app = module.create_app(test_settings)  # no lifespan: the docs need no database
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def _refs(text: str, page: str) -> list[str]:
    found = [next(g for g in m.groups() if g) for m in REFS.finditer(text)]
    return [urljoin(page, ref) for ref in found if not ref.startswith(("data:", "#"))]


async def test_root_redirects_to_docs(docs_client: httpx.AsyncClient) -> None:
    r = await docs_client.get("/")
    assert r.status_code in (302, 307), r.text
    assert r.headers["location"] == "/docs"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_reference_only_their_own_host(docs_client: httpx.AsyncClient, page: str) -> None:
    r = await docs_client.get(page)
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    refs = _refs(r.text, BASE + page)
    assert any(ref.endswith(".js") for ref in refs), refs  # the UI's script is among them
    assert any(ref.endswith("/openapi.json") for ref in refs), refs
    seen: set[str] = set()
    while refs:
        ref = refs.pop()
        if ref in seen:
            continue
        seen.add(ref)
        assert urlsplit(ref).netloc == urlsplit(BASE).netloc, f"{page} references {ref}"
        asset = await docs_client.get(ref)
        assert asset.status_code == 200, f"{ref}: {asset.status_code}"
        if ref.endswith((".css", ".html")):  # a stylesheet's own url(...)s (fonts, images) count too
            refs.extend(_refs(asset.text, ref))
    assert "fonts.googleapis" not in r.text and "cdn.jsdelivr" not in r.text
