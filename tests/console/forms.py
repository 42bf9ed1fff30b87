"""The console over HTTP without a browser: its forms' hidden fields and signing in."""

from __future__ import annotations

import re

import httpx

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
