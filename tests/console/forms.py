"""Driving the console in tests: over HTTP (its forms' hidden fields, signing in) and in a browser."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.async_api import expect

BASE = "http://ledger"


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name}"
    return m.group(1)


async def sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await c.get("/console/login")
    assert form.status_code == 200
    r = await c.post(
        "/console/login",
        data={"api_key": key, "csrf": hidden(form.text, "csrf"), "next": "/console/"},
        headers={"Origin": BASE},
    )
    return r


def number(text: str) -> int:
    """A figure as the console prints it (1,234 / +12 / 5.00 CNY without the separators)."""
    return int(re.sub(r"[^0-9-]", "", text))


async def browser_sign_in(page: Any, base: str, key: str) -> None:
    """Through the sign-in form of a real browser page, to the overview."""
    await page.goto(f"{base}/console/")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.fill("input[name=api_key]", key)
    await page.click("form[action='/console/login'] button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Overview")
