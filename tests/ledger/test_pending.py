"""Pending points and returns policies (DESIGN §10): pending points are posted but not spendable,
become spendable on time with no job, and a clawback follows the program's returns policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import assert_problem, create_program, earn, member, post
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.partners_helpers import fund, partner_with_terms
from tests.ledger.test_batches import upload, wait_done

RULES = {
    "effective_from": "2020-01-01T00:00:00Z",
    "base": {"points": 1, "per_amount_minor": 100},
    "rules": [
        {"name": "returns window online", "match": {"channel": "online"}, "pending_days": 30},
        {"name": "app 2x", "match": {"channel": "app"}, "multiplier": "2", "pending_days": 0},
    ],
}


async def pending_program(client: httpx.AsyncClient, days: int = 7, **overrides: Any) -> str:
    return await create_program(client, pending_days=days, **overrides)


async def travel(db: Any, program: str, days: float) -> None:
    """Moves the program's clock `days` ahead for pending points: their release times come closer."""
    async with db.driver() as conn:
        await conn.execute(
            """UPDATE ledger.lots l SET pending_until = l.pending_until - make_interval(secs => $2)
               FROM ledger.programs p
               WHERE p.id = l.program_id AND p.code = $1 AND l.pending_until IS NOT NULL""",
            program,
            days * 86400,
        )


async def counter(db: Any, program: str, who: str) -> int:
    async with db.driver() as conn:
        value = await conn.fetchval(
            """SELECT a.pending FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
               WHERE p.code = $1 AND a.kind = 'member' AND a.member_ref = $2""",
            program,
            who,
        )
    return int(value)


async def send(client: httpx.AsyncClient, op: str, body: dict[str, Any]) -> httpx.Response:
    return await post(client, f"/v1/{op}", {"reference": "t", **body})


async def reverse(client: httpx.AsyncClient, txn: str, points: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"reason": "returned"}
    if points is not None:
        body["points"] = points
    return await post(client, f"/v1/transactions/{txn}/reverse", body)


async def test_pending_points_cannot_be_burnt_held_or_transferred(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 7)
    e = await earn(client, program, "ann", 100)
    assert e["balance_after"] == {"balance": 100, "held": 0, "pending": 100, "available": 0}
    view = await member(client, program, "ann")
    assert (view["balance"], view["pending"], view["available"]) == (100, 100, 0)
    occurred = datetime.fromisoformat(e["occurred_at"])
    release = datetime.fromisoformat(view["releases"][0]["release_at"])
    assert view["releases"][0]["points"] == 100 and release - occurred == timedelta(days=7)
    for op, body in (
        ("burn", {"member_ref": "ann", "points": 1}),
        ("holds", {"member_ref": "ann", "points": 1}),
        ("transfers", {"from_member_ref": "ann", "to_member_ref": "bob", "points": 1}),
    ):
        assert_problem(await send(client, op, {"program": program, **body}), 422, "insufficient_points")
    # Spendable points beside them are spent, the pending ones stay.
    old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    e2 = await earn(client, program, "ann", 40, occurred_at=old)  # its 7 days are over already
    assert e2["balance_after"] == {"balance": 140, "held": 0, "pending": 100, "available": 40}
    assert (
        await send(client, "burn", {"program": program, "member_ref": "ann", "points": 40})
    ).status_code == 201
    assert_problem(
        await send(client, "burn", {"program": program, "member_ref": "ann", "points": 1}),
        422,
        "insufficient_points",
    )
    assert (await member(client, program, "ann"))["available"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_pending_points_are_released_on_time_without_a_job(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 1)
    soon = (datetime.now(UTC) - timedelta(days=1) + timedelta(seconds=1.5)).isoformat()
    await earn(client, program, "ben", 100, occurred_at=soon)
    assert (await member(client, program, "ben"))["pending"] == 100
    burn = {"program": program, "member_ref": "ben", "points": 100}
    assert_problem(await send(client, "burn", burn), 422, "insufficient_points")
    await asyncio.sleep(2)
    view = await member(client, program, "ben")  # exact at read time, before anything released it
    assert (view["pending"], view["available"], view["releases"]) == (0, 100, [])
    assert await counter(ledger_app.state.db, program, "ben") == 100  # not released in the books yet
    r = await send(client, "burn", burn)  # the debit releases what is due, then takes it
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    assert await counter(ledger_app.state.db, program, "ben") == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_the_release_job_releases_once_from_two_processes(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 10)
    for who in ("c1", "c2", "c3"):
        await earn(client, program, who, 50)
        await earn(client, program, who, 25)
    await travel(ledger_app.state.db, program, 11)
    db = ledger_app.state.db

    async def run() -> int:
        async with db.driver() as conn:
            return int(await conn.fetchval("SELECT ledger.release_due_pending(1000)"))

    first = await asyncio.gather(run(), run())
    again = await run()
    # Other tests' programs may have due lots too: this program's 225 points are released once.
    assert sum(first) + again >= 225 and again == 0
    for who in ("c1", "c2", "c3"):
        assert await counter(db, program, who) == 0
        assert (await member(client, program, who))["available"] == 75
    await check_ledger_invariants(db, program)


async def test_a_rule_overrides_the_program_and_batch_rows_agree_with_api_earns(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 7)
    assert (await client.post(f"/v1/programs/{program}/rules", json=RULES)).status_code == 201
    at = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    cases = {"online": (30, 100), "app": (0, 200), "pos": (7, 100)}  # channel: pending days, points
    r = await post(
        client,
        f"/v1/programs/{program}/rules/evaluate",
        {"member_ref": "x", "purchase": {"amount_minor": 10000, "currency": "CNY", "channel": "online"}},
    )
    assert r.json()["breakdown"]["pending_days"] == 30
    for channel, (days, points) in cases.items():
        purchase = {"amount_minor": 10000, "currency": "CNY", "channel": channel}
        r = await send(
            client, "earn", {"program": program, "member_ref": f"api-{channel}", "purchase": purchase,
                             "occurred_at": at.isoformat()},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["balance_after"]["pending"] == (points if days else 0)
    header = "external_id,type,program,member_ref,amount_minor,currency,channel,occurred_at,points"
    rows = [f"b-{c},earn,{program},batch-{c},10000,CNY,{c},{at.isoformat()}," for c in cases]
    rows.append(f"b-explicit,earn,{program},batch-explicit,,,,{at.isoformat()},60")  # the program's 7 days
    r = await upload(client, ("\n".join([header, *rows]) + "\n").encode())
    assert r.status_code == 202, r.text
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    assert done["posted"] == 4, done
    async with ledger_app.state.db.driver() as conn:
        lots = {
            row["member_ref"]: (row["points"], row["pending_until"])
            for row in await conn.fetch(
                """SELECT a.member_ref, l.points, l.pending_until FROM ledger.lots l
                   JOIN ledger.accounts a ON a.id = l.account_id JOIN ledger.programs p ON p.id = a.program_id
                   WHERE p.code = $1""",
                program,
            )
        }
    for channel, (days, points) in cases.items():
        expected = at + timedelta(days=days) if days else None
        assert lots[f"api-{channel}"] == lots[f"batch-{channel}"] == (points, expected), channel
        view = await member(client, program, f"batch-{channel}")
        assert view["pending"] == (points if days else 0)
    assert lots["batch-explicit"] == (60, at + timedelta(days=7))
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_within_balance_clawback(client: httpx.AsyncClient, ledger_app) -> None:
    program = await pending_program(client, 7)  # returns_policy within_balance by default
    e = await earn(client, program, "dan", 100)
    r = await reverse(client, e["id"], 60)  # a return while pending takes the pending points
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": 40, "held": 0, "pending": 40, "available": 0}
    await travel(ledger_app.state.db, program, 8)
    assert (
        await send(client, "burn", {"program": program, "member_ref": "dan", "points": 30})
    ).status_code == 201
    body = assert_problem(await reverse(client, e["id"], 40), 422, "insufficient_points")
    assert "10" in body["detail"]
    r = await reverse(client, e["id"], 10)
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": 0, "held": 0, "pending": 0, "available": 0}
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_within_balance_clawback_counts_other_pending_points_as_unavailable(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 7)
    old = await earn(
        client, program, "eve", 100, occurred_at=(datetime.now(UTC) - timedelta(days=8)).isoformat()
    )
    await earn(client, program, "eve", 500)  # pending
    assert (
        await send(client, "burn", {"program": program, "member_ref": "eve", "points": 90})
    ).status_code == 201
    # 10 available, 500 pending: the released earn's clawback of 100 may not take the pending ones.
    assert_problem(await reverse(client, old["id"]), 422, "insufficient_points")
    assert (await member(client, program, "eve"))["balance"] == 510
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_only_pending_clawback(client: httpx.AsyncClient, ledger_app) -> None:
    program = await pending_program(client, 7, returns_policy="only_pending")
    e = await earn(client, program, "fay", 100)
    r = await reverse(client, e["id"], 30)
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": 70, "held": 0, "pending": 70, "available": 0}
    await travel(ledger_app.state.db, program, 8)
    body = assert_problem(await reverse(client, e["id"], 10), 422, "clawback_not_pending")
    assert "only_pending" in body["detail"]
    assert (await member(client, program, "fay"))["available"] == 70
    # Spent or not, released points stay the member's; a pending earn's points can all go back.
    e2 = await earn(client, program, "fay", 50)
    assert_problem(await reverse(client, e2["id"], 51), 422, "reversal_exceeds_original")
    r = await reverse(client, e2["id"])
    assert r.status_code == 201 and r.json()["balance_after"]["pending"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_allow_negative_clawback(client: httpx.AsyncClient, ledger_app) -> None:
    program = await pending_program(client, 7, returns_policy="allow_negative")
    e = await earn(client, program, "gus", 100)
    await earn(client, program, "gus", 30)  # pending, untouched by the clawback below
    await travel(ledger_app.state.db, program, 8)
    await earn(client, program, "gus", 20)  # pending again
    assert (
        await send(client, "burn", {"program": program, "member_ref": "gus", "points": 130})
    ).status_code == 201
    r = await reverse(client, e["id"])  # the 100 are spent: the balance goes to 20 - 100
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": -80, "held": 0, "pending": 0, "available": -80}
    assert await counter(ledger_app.state.db, program, "gus") == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_a_pending_lot_past_its_expiry_expires_from_occurred_at(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 60, expiry={"policy": "rolling", "months": 1})
    now = datetime.now(UTC)
    await earn(client, program, "hal", 100, occurred_at=(now - timedelta(days=40)).isoformat())  # expired
    await earn(client, program, "hal", 40, occurred_at=(now - timedelta(days=5)).isoformat())
    assert (await member(client, program, "hal"))["pending"] == 140
    r = await client.post("/v1/jobs/expire", params={"as_of": now.isoformat(), "program": program})
    assert r.status_code == 200, r.text
    view = await member(client, program, "hal")
    assert (view["balance"], view["pending"], view["available"]) == (40, 40, 0)
    assert await counter(ledger_app.state.db, program, "hal") == 40
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_points_rolled_over_from_a_pending_lot_stay_pending_until_its_release(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 60, expiry={"policy": "rolling", "months": 1}, rollover_bps=5000)
    now = datetime.now(UTC)
    # due, and still pending
    await earn(client, program, "ida", 100, occurred_at=(now - timedelta(days=40)).isoformat())
    r = await client.post("/v1/jobs/expire", params={"as_of": now.isoformat(), "program": program})
    assert r.status_code == 200, r.text
    view = await member(client, program, "ida")
    assert (view["balance"], view["pending"], view["available"]) == (50, 50, 0)
    assert await counter(ledger_app.state.db, program, "ida") == 50
    r = await send(client, "burn", {"program": program, "member_ref": "ida", "points": 1})
    assert_problem(r, 422, "insufficient_points")
    await travel(ledger_app.state.db, program, 21)  # past the original earn's release time
    view = await member(client, program, "ida")
    assert (view["balance"], view["pending"], view["available"]) == (50, 0, 50)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_partner_prepaid_earns_go_pending_and_clawbacks_give_funds_back(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await pending_program(client, 7)
    partner = await partner_with_terms(client, program, funding="prepaid")
    await fund(client, partner, program, 300, 240)
    e = await earn(client, program, "ida", 200, partner=partner)
    assert e["balance_after"]["pending"] == 200
    over = {"program": program, "member_ref": "ida", "points": 101, "partner": partner}
    assert_problem(await send(client, "earn", over), 422, "partner_funds_exhausted")
    assert (await reverse(client, e["id"], 50)).status_code == 201  # pending points, funds back to 150
    assert (await earn(client, program, "ida", 150, partner=partner))["balance_after"]["pending"] == 300
    assert_problem(
        await send(client, "burn", {"program": program, "member_ref": "ida", "points": 1}),
        422,
        "insufficient_points",
    )
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_program_fields_are_validated(client: httpx.AsyncClient) -> None:
    for bad in (
        {"pending_days": -1},
        {"pending_days": 366},
        {"returns_policy": "never"},
        {"pending_days": "7"},
    ):
        r = await client.post(
            "/v1/programs",
            json={
                "code": "PBAD",
                "name": "x",
                "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"},
                **bad,
            },
        )
        assert r.status_code == 422, (bad, r.text)
    program = await pending_program(client, 3)
    r = await client.patch(
        f"/v1/programs/{program}", json={"pending_days": 0, "returns_policy": "only_pending"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["pending_days"], r.json()["returns_policy"]) == (0, "only_pending")
    assert (await earn(client, program, "jo", 10))["balance_after"]["pending"] == 0
