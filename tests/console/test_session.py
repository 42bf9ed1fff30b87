"""The console's session and form checks over HTTP (no browser): sign-in, forged and expired
cookies, missing CSRF tokens, cross-site posts, read-only keys."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from ledger_service.console.session import SESSION_COOKIE, SessionCodec
from tests.conftest import create_program, earn, make_key, member
from tests.console.forms import BASE, hidden, sign_in


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


async def test_sign_in_sets_a_sealed_http_only_strict_cookie(
    console: httpx.AsyncClient, admin_key: str
) -> None:
    r = await sign_in(console, admin_key)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    assert admin_key not in cookie  # encrypted, not merely signed
    page = await console.get("/console/")
    assert page.status_code == 200 and "Overview" in page.text
    assert admin_key not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_unknown_key_is_refused(console: httpx.AsyncClient) -> None:
    r = await sign_in(console, "jf_not-a-key")
    assert r.status_code == 303 and "error=1" in r.headers["location"]
    assert SESSION_COOKIE not in console.cookies
    assert (await console.get("/console/")).status_code == 303


async def test_sign_in_without_the_forms_token_is_refused(console: httpx.AsyncClient, admin_key: str) -> None:
    await console.get("/console/login")
    r = await console.post("/console/login", data={"api_key": admin_key}, headers={"Origin": BASE})
    assert r.status_code == 403
    assert SESSION_COOKIE not in console.cookies


async def test_forged_cookie_is_refused(console: httpx.AsyncClient, ledger_app: Any, admin_key: str) -> None:
    # A well-formed token sealed with another secret: what a forger without the data dir can make.
    forged, _ = SessionCodec(Fernet.generate_key(), 3600).seal(admin_key)
    r = await console.get("/console/", headers=_cookie(forged))
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    # and one character changed in a genuine cookie
    genuine, _ = ledger_app.state.console_sessions.seal(admin_key)
    tampered = genuine[:-6] + ("A" if genuine[-6] != "A" else "B") + genuine[-5:]
    assert (await console.get("/console/", headers=_cookie(tampered))).status_code == 303
    assert (await console.get("/console/", headers=_cookie(genuine))).status_code == 200


async def test_expired_cookie_is_refused(console: httpx.AsyncClient, ledger_app: Any, admin_key: str) -> None:
    codec: SessionCodec = ledger_app.state.console_sessions
    old, session = codec.seal(admin_key, now=int(time.time()) - codec.ttl_s - 5)
    assert (await console.get("/console/", headers=_cookie(old))).status_code == 303
    r = await console.post(
        "/console/jobs/expire", data={"csrf": session.csrf}, headers={"Origin": BASE, **_cookie(old)}
    )
    assert r.status_code == 401
    fresh, _ = codec.seal(admin_key, now=int(time.time()) - codec.ttl_s + 60)
    assert (await console.get("/console/", headers=_cookie(fresh))).status_code == 200


async def _reverse_form(
    console: httpx.AsyncClient, client: httpx.AsyncClient, program: str
) -> tuple[str, str]:
    txn = await earn(client, program, "m-1", 500)
    page = await console.get(f"/console/programs/{program}/members/m-1")
    assert page.status_code == 200
    return txn["id"], hidden(page.text, "idempotency_key")


async def test_post_without_csrf_or_from_another_site_is_refused(
    console: httpx.AsyncClient, client: httpx.AsyncClient, admin_key: str
) -> None:
    program = await create_program(client)
    await sign_in(console, admin_key)
    txn_id, idem = await _reverse_form(console, client, program)
    page = await console.get(f"/console/programs/{program}/members/m-1")
    csrf = hidden(page.text, "csrf")
    path = f"/console/transactions/{txn_id}/reverse"
    body = {"idempotency_key": idem, "reason": "test", "points": "100"}
    missing = await console.post(path, data=body, headers={"Origin": BASE})
    assert missing.status_code == 403
    wrong = await console.post(path, data={**body, "csrf": csrf[:-1] + "x"}, headers={"Origin": BASE})
    assert wrong.status_code == 403
    cross = await console.post(path, data={**body, "csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    fetch_site = await console.post(
        path, data={**body, "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert fetch_site.status_code == 403
    assert (await member(client, program, "m-1"))["balance"] == 500  # nothing was reversed
    ok = await console.post(path, data={**body, "csrf": csrf}, headers={"Origin": BASE})
    assert ok.status_code == 303, ok.text
    again = await console.post(path, data={**body, "csrf": csrf}, headers={"Origin": BASE})
    assert again.status_code == 303  # the same form twice: replayed, not applied twice
    assert (await member(client, program, "m-1"))["balance"] == 400


async def test_read_only_key_sees_no_action_and_is_refused_one(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await create_program(client)
    txn = await earn(client, program, "m-1", 500)
    reader = await make_key(ledger_app, ["ledger:read"])
    await sign_in(console, reader)
    page = await console.get(f"/console/programs/{program}/members/m-1")
    assert page.status_code == 200 and "read-only" in page.text
    assert '<form method="post" action="/console/transactions' not in page.text
    assert "Run expiry" not in (await console.get(f"/console/programs/{program}")).text
    csrf = hidden(page.text, "csrf")
    r = await console.post(
        f"/console/transactions/{txn['id']}/reverse",
        data={"csrf": csrf, "idempotency_key": "console-00000000-0000-0000-0000-000000000001", "reason": "x"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 403 and "ledger:admin" in r.text
    assert (await member(client, program, "m-1"))["balance"] == 500


async def test_sign_out_ends_the_session(console: httpx.AsyncClient, admin_key: str) -> None:
    await sign_in(console, admin_key)
    page = await console.get("/console/")
    r = await console.post(
        "/console/logout", data={"csrf": hidden(page.text, "csrf")}, headers={"Origin": BASE}
    )
    assert r.status_code == 303
    assert SESSION_COOKIE not in console.cookies
    assert (await console.get("/console/")).status_code == 303


async def test_sagas_page_says_which_service_is_unreachable(
    console: httpx.AsyncClient, ledger_app: Any, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.harness import free_port

    settings = ledger_app.state.settings
    monkeypatch.setattr(settings, "conversion_url", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(settings, "catalog_url", f"http://127.0.0.1:{free_port()}")
    await sign_in(console, admin_key)
    page = await console.get("/console/sagas")
    assert page.status_code == 200
    assert page.text.count('data-test="saga-problem"') == 2
    assert "The conversion service at http://127.0.0.1:" in page.text and "is unreachable" in page.text


async def test_run_expiry_needs_an_admin_key_for_every_program(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any, admin_key: str
) -> None:
    program = await create_program(client)
    limited = await make_key(ledger_app, ["ledger:admin", "ledger:read"], programs=[program])
    await sign_in(console, limited)
    page = await console.get(f"/console/programs/{program}")
    assert "Run expiry" not in page.text
    r = await console.post(
        "/console/jobs/expire", data={"csrf": hidden(page.text, "csrf")}, headers={"Origin": BASE}
    )
    assert r.status_code == 403
    await sign_in(console, admin_key)
    page = await console.get(f"/console/programs/{program}")
    assert "Run expiry" in page.text
    r = await console.post(
        "/console/jobs/expire",
        data={"csrf": hidden(page.text, "csrf"), "back": f"/console/programs/{program}"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 303 and r.headers["location"].startswith(
        f"/console/programs/{program}?notice=expired-"
    )


async def test_pages_refuse_programs_outside_the_key(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any
) -> None:
    mine, other = await create_program(client), await create_program(client)
    await earn(client, other, "m-9", 10)
    reader = await make_key(ledger_app, ["ledger:read"], programs=[mine])
    await sign_in(console, reader)
    overview = await console.get("/console/")
    assert mine in overview.text and other not in overview.text
    for path in (
        f"/console/programs/{other}",
        f"/console/programs/{other}/members/m-9",
        f"/console/?program={other}",
    ):
        r = await console.get(path)
        assert r.status_code == 403, path
        assert "program_forbidden" not in r.text and "may not act on program" in r.text  # a page, not JSON
    assert (await console.get("/console/programs/NOPE_NOPE")).status_code == 403
    assert (await console.get("/console/login?next=https://evil.example/")).text.count("evil.example") == 0


async def test_batch_progress_poll_without_a_session_is_401(console: httpx.AsyncClient) -> None:
    r = await console.get("/console/batches/00000000-0000-0000-0000-000000000000/progress")
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"


async def test_a_console_reversal_is_in_the_event_feed_like_an_api_one(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any, admin_key: str
) -> None:
    program = await create_program(client)
    await sign_in(console, admin_key)
    txn_id, idem = await _reverse_form(console, client, program)
    page = await console.get(f"/console/programs/{program}/members/m-1")
    r = await console.post(
        f"/console/transactions/{txn_id}/reverse",
        data={
            "csrf": hidden(page.text, "csrf"),
            "idempotency_key": idem,
            "reason": "damaged parcel",
            "points": "120",
        },
        headers={"Origin": BASE},
    )
    assert r.status_code == 303
    reader = await make_key(ledger_app, ["ledger:read"], programs=[program])
    feed = (await client.get("/v1/events", headers={"Authorization": f"Bearer {reader}"})).json()["data"]
    moves = [(e["type"], e["transaction"]["points"], e["transaction"].get("reason")) for e in feed]
    assert moves == [("transaction.earn", 500, None), ("transaction.reversal", 120, "damaged parcel")]
    assert feed[1]["transaction"]["original_id"] == txn_id
