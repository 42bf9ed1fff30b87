from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson

from tests.conftest import assert_problem, earn, member, new_key, post
from tests.harness import wait_for_lock_wait
from tests.ledger.invariants import check_ledger_invariants


async def _hold(client: httpx.AsyncClient, program: str, who: str, points: int, **extra) -> dict:
    r = await post(
        client,
        "/v1/holds",
        {"program": program, "member_ref": who, "points": points, "reference": "cart", **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_partial_capture_releases_the_rest(client: httpx.AsyncClient, program: str, ledger_app) -> None:
    await earn(client, program, "ana", 1000)
    hold = await _hold(client, program, "ana", 800)
    assert hold["status"] == "held" and hold["balance_after"] == {
        "balance": 1000,
        "held": 800,
        "pending": 0,
        "available": 200,
    }
    burn = {"program": program, "member_ref": "ana", "points": 201, "reference": "o"}
    assert_problem(await post(client, "/v1/burn", burn), 422, "insufficient_points")

    r = await post(client, f"/v1/holds/{hold['id']}/capture", {"points": 600})
    assert r.status_code == 201, r.text
    cap = r.json()
    assert cap["type"] == "capture" and cap["points"] == 600 and cap["hold_id"] == hold["id"]
    assert cap["balance_after"] == {"balance": 400, "held": 0, "pending": 0, "available": 400}
    got = (await client.get(f"/v1/holds/{hold['id']}")).json()
    assert got["status"] == "captured" and got["captured_points"] == 600
    assert got["capture_transaction_id"] == cap["id"]
    assert_problem(await post(client, f"/v1/holds/{hold['id']}/capture", {}), 409, "hold_not_active")
    assert_problem(await post(client, f"/v1/holds/{hold['id']}/void", {}), 409, "hold_not_active")
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_capture_without_body_takes_all(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "ben", 100)
    hold = await _hold(client, program, "ben", 60)
    r = await client.post(f"/v1/holds/{hold['id']}/capture", headers={"Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201 and r.json()["points"] == 60
    assert (await member(client, program, "ben"))["balance"] == 40


async def test_capture_more_than_held_is_refused(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "cy", 100)
    hold = await _hold(client, program, "cy", 50)
    assert_problem(
        await post(client, f"/v1/holds/{hold['id']}/capture", {"points": 51}), 422, "capture_exceeds_hold"
    )
    view = await member(client, program, "cy")
    assert view["held"] == 50 and view["balance"] == 100


async def test_void_releases_everything(client: httpx.AsyncClient, program: str, ledger_app) -> None:
    await earn(client, program, "dee", 100)
    hold = await _hold(client, program, "dee", 100)
    r = await post(client, f"/v1/holds/{hold['id']}/void", {"reason": "abandoned"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "voided" and r.json()["balance_after"]["available"] == 100
    assert_problem(await post(client, f"/v1/holds/{hold['id']}/capture", {}), 409, "hold_not_active")
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_expired_hold_is_released_automatically(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "eve", 100)
    hold = await _hold(client, program, "eve", 90, expires_in_s=1)
    assert (await member(client, program, "eve"))["available"] == 10
    for _ in range(100):  # the sweeper runs every 0.2 s in tests; allow a slow machine
        await asyncio.sleep(0.2)
        view = await member(client, program, "eve")
        if view["held"] == 0:
            break
    assert view["held"] == 0 and view["available"] == 100
    assert (await client.get(f"/v1/holds/{hold['id']}")).json()["status"] == "expired"
    assert_problem(await post(client, f"/v1/holds/{hold['id']}/capture", {}), 409, "hold_not_active")
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_expired_hold_frees_points_even_before_the_sweeper(
    client: httpx.AsyncClient, program: str, ledger_app, admin_key: str
) -> None:
    await earn(client, program, "fay", 100)
    hold = await _hold(client, program, "fay", 100, expires_in_s=600)
    principal = await ledger_app.state.keys.lookup(admin_key)
    burn = {"program": program, "member_ref": "fay", "points": 100, "reference": "o"}
    async with ledger_app.state.db.driver() as conn, conn.transaction():
        # Expired, but the sweeper cannot see it: the change is not committed. Only a lazy release
        # inside the debit itself can free the points.
        await conn.execute(
            "UPDATE ledger.holds SET expires_at = now() - interval '1 s' WHERE id = $1", uuid.UUID(hold["id"])
        )
        row = await conn.fetchrow(
            "SELECT * FROM ledger.execute($1, $2, '\\x00'::bytea, 'burn', $3::jsonb, NULL, $4)",
            principal.key_id, new_key(), orjson.dumps(burn).decode(), sorted(principal.scopes),
        )  # fmt: skip
        assert row["status"] == 201, row["body"]
        capture = await conn.fetchrow(
            "SELECT * FROM ledger.execute($1, $2, '\\x00'::bytea, 'capture', $3::jsonb, NULL, $4)",
            principal.key_id, new_key(), orjson.dumps({"hold_id": hold["id"]}).decode(),
            sorted(principal.scopes),
        )  # fmt: skip
        assert capture["status"] == 409 and capture["body"]["code"] == "hold_not_active"
    assert (await client.get(f"/v1/holds/{hold['id']}")).json()["status"] == "expired"
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_capturing_an_expired_hold_before_the_sweep_is_409(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    """The hold's expiry is moved into the past by a transaction that keeps the row locked until the
    capture waits behind it (seen in pg_locks): the capture, first in the row's queue, sees the hold
    expired before the sweeper (which skips locked rows) can release it."""
    await earn(client, program, "gil", 100)
    hold = await _hold(client, program, "gil", 50, expires_in_s=600)
    db = ledger_app.state.db
    async with db.driver() as conn, db.driver() as watch:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "UPDATE ledger.holds SET expires_at = now() - interval '1 s' WHERE id = $1", uuid.UUID(hold["id"])
        )
        capture = asyncio.create_task(post(client, f"/v1/holds/{hold['id']}/capture", {}))
        await wait_for_lock_wait(watch, holder=conn.get_server_pid())
        await tx.commit()
        r = await asyncio.wait_for(capture, timeout=30)
    assert_problem(r, 409, "hold_expired")
    view = await member(client, program, "gil")
    assert view["balance"] == 100
    assert (await client.get(f"/v1/holds/{hold['id']}")).json()["status"] in ("held", "expired")


async def test_unknown_hold(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert_problem(await post(client, f"/v1/holds/{missing}/capture", {}), 404, "hold_not_found")
    assert_problem(await post(client, f"/v1/holds/{missing}/void", {}), 404, "hold_not_found")
    assert_problem(await client.get(f"/v1/holds/{missing}"), 404, "hold_not_found")
    assert_problem(await post(client, "/v1/holds/not-a-uuid/void", {}), 422, "validation_error")


async def test_concurrent_captures_of_one_hold_capture_once(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "gus", 100)
    hold = await _hold(client, program, "gus", 100)
    responses = await asyncio.gather(
        *(post(client, f"/v1/holds/{hold['id']}/capture", {"points": 10}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    view = await member(client, program, "gus")
    assert view == {**view, "balance": 90, "held": 0, "available": 90}
