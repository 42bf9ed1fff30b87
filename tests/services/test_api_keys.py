"""API key management (issue 13): the admin API and `jifen api-keys`, revocation seen by every process
at once (LISTEN/NOTIFY), and keys limited only to programs that exist (issue 12 item 8)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.auth import hash_key, new_secret
from services.cli import main
from services.settings import Settings
from tests.conftest import assert_problem, create_program, make_key


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def wait_listening(app: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not app.state.keys.listening:
        assert time.monotonic() < deadline, "the key store never listened for changes"
        await asyncio.sleep(0.01)


async def test_create_list_get_revoke_rotate_through_the_api(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client)
    r = await client.post(
        "/v1/api-keys", json={"name": "pos", "scopes": ["ledger:read", "ledger:burn"], "programs": [program]}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret, key_id = created["secret"], created["id"]
    assert secret.startswith("jf_") and created["prefix"] == secret[:10] and created["status"] == "active"
    assert (await client.get(f"/v1/programs/{program}", headers=bearer(secret))).status_code == 200

    listed = (await client.get("/v1/api-keys", params={"status": "active", "limit": 500})).json()
    mine = [k for k in listed["data"] if k["id"] == key_id]
    assert mine and "secret" not in mine[0] and mine[0]["programs"] == [program]
    one = (await client.get(f"/v1/api-keys/{key_id}")).json()
    assert "secret" not in one and one["scopes"] == ["ledger:burn", "ledger:read"]

    r = await client.post(f"/v1/api-keys/{key_id}/rotate")
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert rotated["id"] != key_id and rotated["secret"] != secret
    assert (rotated["name"], rotated["scopes"], rotated["programs"]) == ("pos", one["scopes"], [program])
    assert_problem(
        await client.get(f"/v1/programs/{program}", headers=bearer(secret)), 401, "invalid_api_key"
    )
    assert (await client.get(f"/v1/programs/{program}", headers=bearer(rotated["secret"]))).status_code == 200
    assert (await client.get(f"/v1/api-keys/{key_id}")).json()["status"] == "revoked"
    assert_problem(await client.post(f"/v1/api-keys/{key_id}/rotate"), 409, "api_key_revoked")

    r = await client.post(f"/v1/api-keys/{rotated['id']}/revoke")
    assert r.status_code == 200 and r.json()["status"] == "revoked" and "secret" not in r.json()
    again = await client.post(f"/v1/api-keys/{rotated['id']}/revoke")
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    assert_problem(
        await client.get(f"/v1/programs/{program}", headers=bearer(rotated["secret"])), 401, "invalid_api_key"
    )
    revoked = (await client.get("/v1/api-keys", params={"status": "revoked", "limit": 500})).json()["data"]
    assert {key_id, rotated["id"]} <= {k["id"] for k in revoked}
    assert_problem(await client.get("/v1/api-keys/999999999"), 404, "api_key_not_found")
    assert_problem(await client.post("/v1/api-keys/999999999/revoke"), 404, "api_key_not_found")


async def test_a_key_grants_only_what_it_has_and_programs_must_exist(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program, other = await create_program(client), await create_program(client)
    limited = await make_key(ledger_app, ["ledger:admin"], programs=[program])
    reader = await make_key(ledger_app, ["ledger:read"])
    assert_problem(await client.get("/v1/api-keys", headers=bearer(reader)), 403, "insufficient_scope")
    body = {"scopes": ["ledger:read"], "programs": [program]}
    assert (await client.post("/v1/api-keys", json=body, headers=bearer(limited))).status_code == 201
    for bad, code in (
        ({"scopes": ["catalog:admin"], "programs": [program]}, "insufficient_scope"),
        ({"scopes": ["ledger:read"], "programs": [other]}, "program_forbidden"),
        ({"scopes": ["ledger:read"]}, "program_forbidden"),  # every program is more than it has
    ):
        assert_problem(await client.post("/v1/api-keys", json=bad, headers=bearer(limited)), 403, code)
    assert_problem(
        await client.post("/v1/api-keys", json={"scopes": ["ledger:read"], "programs": ["NOPE_NOPE"]}),
        422,
        "program_not_found",
    )
    assert_problem(
        await client.post("/v1/api-keys", json={"scopes": ["ledger:fly"]}), 422, "validation_error"
    )
    # a limited admin sees and manages only keys within its programs
    wide = (await client.post("/v1/api-keys", json={"scopes": ["ledger:read"]})).json()
    seen = (await client.get("/v1/api-keys", params={"limit": 500}, headers=bearer(limited))).json()["data"]
    assert seen and all(k["programs"] and set(k["programs"]) <= {program} for k in seen)
    assert_problem(
        await client.post(f"/v1/api-keys/{wide['id']}/revoke", headers=bearer(limited)),
        404,
        "api_key_not_found",
    )


@pytest.fixture
async def second_ledger(test_settings: Settings) -> AsyncIterator[Any]:
    """Another ledger process's worth of state: its own app, pool and key cache."""
    from ledger_service.app import create_app

    app = create_app(test_settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_revocation_reaches_every_process_cache_at_once(
    client: httpx.AsyncClient, ledger_app, second_ledger
) -> None:
    """Both apps have the key in their cache (a revoked key used to work there for up to 30 s); the
    revocation through one is announced to the other, which refuses the key as soon as it hears."""
    program = await create_program(client)
    secret = new_secret()
    digest = hash_key(secret)
    async with ledger_app.state.db.driver() as conn:  # stored without a NOTIFY of its own
        key_id = await conn.fetchval(
            "INSERT INTO auth.api_keys (name, prefix, key_hash, scopes, programs)"
            " VALUES ('two-apps', $1, $2, $3, $4) RETURNING id",
            secret[:10], digest, ["ledger:read"], [program],
        )  # fmt: skip
    await wait_listening(ledger_app)
    await wait_listening(second_ledger)
    store = second_ledger.state.keys
    transport = httpx.ASGITransport(app=second_ledger)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger-2") as other:
        deadline = time.monotonic() + 10
        while digest not in store._cache:  # a lookup that overlaps another change is not cached
            assert time.monotonic() < deadline, "the second app never cached the key"
            assert (await other.get(f"/v1/programs/{program}", headers=bearer(secret))).status_code == 200
        r = await client.post(f"/v1/api-keys/{key_id}/revoke")
        assert r.status_code == 200, r.text
        while digest in store._cache:  # only the NOTIFY can tell the other app
            store.changed.clear()
            await asyncio.wait_for(store.changed.wait(), timeout=10)
        assert_problem(
            await other.get(f"/v1/programs/{program}", headers=bearer(secret)), 401, "invalid_api_key"
        )


async def test_a_store_that_cannot_listen_caches_nothing(ledger_app) -> None:
    from services.auth import KeyStore

    store = KeyStore(ledger_app.state.db)  # never started: it would not hear of changes
    _, secret = await _key(ledger_app)
    assert (await store.lookup(secret)) is not None
    assert store._cache == {}


async def _key(app: Any) -> tuple[int, str]:
    from services.auth import create_api_key

    return await create_api_key(app.state.db, name="t", scopes=["ledger:read"])


def test_the_command_line_creates_lists_revokes_and_rotates(
    database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JIFEN_DATA_DIR", str(tmp_path))
    code = asyncio.run(_program(database_url))

    assert main(["create-api-key", "--scopes", "ledger:read", "--programs", "NOPE_NOPE"]) == 2
    assert "no program NOPE_NOPE" in capsys.readouterr().err
    assert main(["create-api-key", "--scopes", "ledger:fly"]) == 2
    capsys.readouterr()
    assert main(["create-api-key", "--name", "cli-test", "--scopes", "ledger:read", "--programs", code]) == 0
    out = capsys.readouterr().out
    key_id = int(out.split()[2])
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("jf_")
    assert main(["api-keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "cli-test" in listing and secret not in listing and secret[:10] in listing
    assert main(["api-keys", "rotate", str(key_id)]) == 0
    new_secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert new_secret.startswith("jf_") and new_secret != secret
    assert main(["api-keys", "revoke", str(key_id)]) == 0
    capsys.readouterr()
    assert main(["api-keys", "rotate", str(key_id)]) == 1
    assert "revoked" in capsys.readouterr().err
    assert main(["api-keys", "list", "--all"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "cli-test" in line]
    assert sorted(line.split()[1] for line in rows) == ["active", "revoked"]


async def _program(database_url: str) -> str:
    from ledger_service.programs.schemas import ProgramIn
    from ledger_service.programs.service import create_program as create
    from services.db import Database
    from tests.conftest import unique_code

    db = Database(database_url, pool_size=1)
    try:
        code = unique_code()
        body = {"code": code, "name": "cli", "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"}}
        await create(db, ProgramIn.model_validate(body))
        return code
    finally:
        with contextlib.suppress(Exception):
            await db.dispose()


async def test_a_revocation_from_the_command_line_reaches_a_running_service_process(
    live_ledger: Any, database_url: str
) -> None:
    """Another process (the ledger under uvicorn) has the key cached; a revocation made outside it,
    as `jifen api-keys revoke` does, reaches it through PostgreSQL."""
    from services import apikeys
    from services.db import Database

    db = Database(database_url, pool_size=1)
    try:
        key_id, secret = await _key_for(db)
        async with httpx.AsyncClient(base_url=live_ledger.url, headers=bearer(secret)) as c:
            assert (await c.get("/v1/programs")).status_code == 200  # now in the process's cache
            await apikeys.revoke(db, None, key_id)
            deadline = time.monotonic() + 10  # far below the old cache's 30 s
            while (r := await c.get("/v1/programs")).status_code == 200:
                assert time.monotonic() < deadline, "the running process still accepts the revoked key"
                await asyncio.sleep(0.02)
            assert_problem(r, 401, "invalid_api_key")
    finally:
        await db.dispose()


async def _key_for(db: Any) -> tuple[int, str]:
    from services.auth import create_api_key

    return await create_api_key(db, name="t", scopes=["ledger:read"])
