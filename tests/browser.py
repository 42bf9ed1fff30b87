"""A real browser for the tests: Debian's chromium driven by Playwright's Python package.

One browser per test session. The system chromium is installed with apt-get when it is missing
(CI runs as root); if that fails the tests fail, they are never skipped. Playwright's own browser
download (`playwright install`) is never used: the machines reach no such host.

Every page a test opens is watched: a request to any host but localhost / 127.0.0.1 is aborted
and fails the test, and so does any console error or uncaught exception in the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
LOCAL_HOSTS = {"localhost", "127.0.0.1"}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(
    os.environ.get("JIFEN_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "test-screenshots")
)


def ensure_chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = [[apt, "update"], [apt, "install", "-y", "--no-install-recommends", "chromium"]]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed ({done.returncode}): {done.stderr[-2000:]}")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    path = ensure_chromium()
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class Watch:
    """What a page did that a test must not allow."""

    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.outside, f"requests left localhost: {self.outside}"
        assert not self.errors, f"errors in the page: {self.errors}"


Fulfil = Callable[[Any], Awaitable[bool]]


async def watched_page(browser: Any, *, fulfil: Fulfil | None = None) -> tuple[Any, Any, Watch]:
    """A fresh context (its own cookies) and page, with every request routed through a check.
    `fulfil` may answer a request itself (e.g. a page of another site); it returns True if it did."""
    context = await browser.new_context(viewport=DESKTOP, service_workers="block")
    watch = Watch()

    async def route(r: Any) -> None:
        if fulfil is not None and await fulfil(r):
            return
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            await r.continue_()
            return
        watch.outside.append(r.request.url)
        await r.abort("blockedbyclient")

    await context.route("**/*", route)
    page = await context.new_page()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            watch.errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watch.errors.append(f"uncaught: {exc}"))
    return context, page, watch


@asynccontextmanager
async def watching(
    browser: Any, *, fulfil: Fulfil | None = None, expected: re.Pattern[str] | None = None
) -> AsyncIterator[Any]:
    """A watched page (`watched_page`) for the length of a block: its context is closed however the
    block ends, and a block that ends normally must have sent no request outside localhost and logged
    no error but those matching `expected` (a refusal the test provokes, which the browser logs)."""
    context, page, watch = await watched_page(browser, fulfil=fulfil)
    try:
        yield page
        if expected is not None:
            watch.errors[:] = [e for e in watch.errors if not expected.search(e)]
        watch.check()
    finally:
        await context.close()


async def screenshots(page: Any, name: str) -> None:
    """The page as it stands, at a laptop's and at a phone's width (not committed: git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)
