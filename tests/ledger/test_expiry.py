from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import assert_problem, create_program, earn, make_key, member, post
from tests.ledger.invariants import check_ledger_invariants


def ago(**kw) -> str:
    return (datetime.now(UTC) - timedelta(**kw)).isoformat()


async def _expire(client: httpx.AsyncClient, **params) -> dict:
    r = await client.post("/v1/jobs/expire", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def _lots(ledger_app, program: str, member_ref: str) -> list[tuple[int, int, datetime | None]]:
    async with ledger_app.state.db.driver() as conn:
        rows = await conn.fetch(
            """SELECT l.points, l.remaining, l.expires_at FROM ledger.lots l
               JOIN ledger.accounts a ON a.id = l.account_id JOIN ledger.programs p ON p.id = a.program_id
               WHERE p.code = $1 AND a.member_ref = $2 ORDER BY l.id""",
            program,
            member_ref,
        )
    return [(r["points"], r["remaining"], r["expires_at"]) for r in rows]


async def test_rolling_expiry_goes_to_breakage(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1})
    await earn(client, program, "al", 100, occurred_at=ago(days=40))
    await earn(client, program, "al", 50, occurred_at=ago(days=5))
    view = await member(client, program, "al")
    assert [e["points"] for e in view["expiring"]] == [100, 50]
    run = await _expire(client)
    assert run["expired_points"] >= 100
    view = await member(client, program, "al")
    assert view["balance"] == 50 and [e["points"] for e in view["expiring"]] == [50]
    statement = (await client.get(f"/v1/programs/{program}/members/al/transactions")).json()["data"]
    assert statement[0]["type"] == "expiry" and statement[0]["amount"] == -100
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_never_and_fixed_policies(client: httpx.AsyncClient, ledger_app) -> None:
    never = await create_program(client)
    await earn(client, never, "bo", 100, occurred_at=ago(days=3000))
    assert (await _lots(ledger_app, never, "bo"))[0][2] is None
    fixed = await create_program(client, expiry={"policy": "fixed", "month": 12, "day": 31, "years_after": 1})
    await earn(client, fixed, "bo", 100, occurred_at="2026-03-15T08:00:00Z")
    await earn(client, fixed, "bo", 70, occurred_at="2024-07-01T00:00:00Z")
    lots = await _lots(ledger_app, fixed, "bo")
    assert lots[0][2] == datetime(2028, 1, 1, tzinfo=UTC)  # end of 31 Dec 2027
    assert lots[1][2] == datetime(2026, 1, 1, tzinfo=UTC)  # end of 31 Dec 2025: already past
    await _expire(client)
    assert (await member(client, fixed, "bo"))["balance"] == 100
    assert (await member(client, never, "bo"))["balance"] == 100
    await check_ledger_invariants(ledger_app.state.db, fixed)


async def test_burns_consume_earliest_expiring_first(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 12})
    await earn(client, program, "cy", 100, occurred_at=ago(days=10))  # expires soonest... second
    await earn(client, program, "cy", 100, occurred_at=ago(days=100))  # expires first
    await earn(client, program, "cy", 100)
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "cy", "points": 150, "reference": "o"}
    )
    assert r.status_code == 201
    remaining = [lot[1] for lot in await _lots(ledger_app, program, "cy")]
    assert remaining == [50, 0, 100]
    # a refund gives points back to the lots they came from, latest-expiring first
    r2 = await post(client, f"/v1/transactions/{r.json()['id']}/reverse", {"points": 60, "reason": "refund"})
    assert r2.status_code == 201
    assert [lot[1] for lot in await _lots(ledger_app, program, "cy")] == [100, 10, 100]
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_clawback_takes_from_its_own_lot_first(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 12})
    await earn(client, program, "dy", 100, occurred_at=ago(days=100))
    t = await earn(client, program, "dy", 100)
    r = await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 40, "reason": "fraud"})
    assert r.status_code == 201
    assert [lot[1] for lot in await _lots(ledger_app, program, "dy")] == [100, 60]


async def test_rollover_moves_a_share_into_a_new_lot(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1}, rollover_bps=2500)
    await earn(client, program, "ed", 101, occurred_at=ago(days=40))
    run = await _expire(client)
    assert run["rolled_over_points"] >= 25
    view = await member(client, program, "ed")
    assert view["balance"] == 25  # floor(101 * 25%) rolled over, 76 expired
    lots = await _lots(ledger_app, program, "ed")
    assert lots[0][1] == 0 and lots[1][:2] == (25, 25)
    assert lots[1][2] == lots[0][2] + (lots[1][2] - lots[0][2])  # dated
    assert lots[1][2] > datetime.now(UTC) - timedelta(days=15)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_held_points_do_not_expire_until_the_hold_ends(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1})
    await earn(client, program, "fay", 100, occurred_at=ago(days=40))
    r = await post(
        client, "/v1/holds", {"program": program, "member_ref": "fay", "points": 30, "reference": "c"}
    )
    hold = r.json()
    await _expire(client)
    view = await member(client, program, "fay")
    assert view["balance"] == 30 and view["held"] == 30
    cap = await post(client, f"/v1/holds/{hold['id']}/capture", {"points": 10})
    assert cap.status_code == 201
    await _expire(client)
    assert (await member(client, program, "fay"))["balance"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_expiry_run_twice_concurrently_expires_once(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1})
    for i in range(40):
        await earn(client, program, f"m{i % 8}", 10 + i, occurred_at=ago(days=40 + i))
    before = sum([(await member(client, program, f"m{i}"))["balance"] for i in range(8)])
    runs = await asyncio.gather(*(_expire(client) for _ in range(4)))
    assert sum(r["expired_points"] for r in runs) >= before
    assert [(await member(client, program, f"m{i}"))["balance"] for i in range(8)] == [0] * 8
    async with ledger_app.state.db.driver() as conn:
        expired = await conn.fetchval(
            """SELECT sum(t.points) FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id
               WHERE p.code = $1 AND t.type = 'expiry'""",
            program,
        )
    assert expired == before
    again = await _expire(client)
    assert again["expired_points"] == 0 or again["lots"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_expiry_as_of_cannot_be_in_the_future(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/jobs/expire", params={"as_of": "2099-01-01T00:00:00Z"})
    assert_problem(r, 422, "as_of_in_future")
    r = await client.post("/v1/jobs/expire", params={"as_of": "2999-01-01T00:00:00Z"})
    assert_problem(r, 422, "timestamp_out_of_range")
    past = await _expire(client, as_of="2000-01-01T00:00:00Z")
    assert past["lots"] == 0 or past["expired_points"] >= 0


async def _report(client: httpx.AsyncClient, program: str) -> dict:
    r = await client.get(f"/v1/programs/{program}/report", params={"from": "2025-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    return {k: v for k, v in r.json().items() if k != "to"}  # `to` defaults to now


async def test_expiry_is_a_fixed_point(client: httpx.AsyncClient, ledger_app) -> None:
    """Issue 12 item 3: the first run left a rolled-over lot already due at as_of, and the second run
    expired half of it and rolled the rest again (balance 800, then 550)."""
    program = await create_program(client, expiry={"policy": "rolling", "months": 1}, rollover_bps=5000)
    await earn(client, program, "fix", 1000, occurred_at="2026-01-01T00:00:00Z")
    await earn(client, program, "fix", 300)
    as_of = "2026-03-01T00:00:00Z"
    first = await _expire(client, as_of=as_of, program=program)
    assert first["expired_points"] == 1000 and first["rolled_over_points"] == 0, first
    after_first = (await member(client, program, "fix"), await _report(client, program))
    assert after_first[0]["balance"] == 300
    due = [lot for lot in await _lots(ledger_app, program, "fix") if lot[1] > 0 and lot[2] is not None]
    assert all(lot[2] > datetime.fromisoformat(as_of) for lot in due), due
    second = await _expire(client, as_of=as_of, program=program)
    assert second["expired_points"] == 0 and second["rolled_over_points"] == 0, second
    assert (await member(client, program, "fix"), await _report(client, program)) == after_first
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_rolled_over_points_roll_once(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1}, rollover_bps=5000)
    await earn(client, program, "once", 1000, occurred_at="2026-01-01T00:00:00Z")
    first = await _expire(client, as_of="2026-02-15T00:00:00Z", program=program)
    assert (first["expired_points"], first["rolled_over_points"]) == (500, 500)
    second = await _expire(client, as_of="2026-03-15T00:00:00Z", program=program)
    assert (second["expired_points"], second["rolled_over_points"]) == (500, 0)
    assert (await member(client, program, "once"))["balance"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_jobs_respect_a_keys_programs(client: httpx.AsyncClient, raw_client, ledger_app) -> None:
    """Issue 12 item 4: an admin key limited to one program could run every job for every program."""
    mine = await create_program(client, expiry={"policy": "rolling", "months": 1})
    other = await create_program(client, expiry={"policy": "rolling", "months": 1})
    await earn(client, mine, "job", 100, occurred_at=ago(days=40))
    await earn(client, other, "job", 100, occurred_at=ago(days=40))
    limited = await make_key(ledger_app, ["ledger:admin", "ledger:read"], [mine])
    auth = {"Authorization": f"Bearer {limited}"}
    for path in ("/v1/jobs/expire", "/v1/jobs/tier-review", "/v1/jobs/notices", "/v1/jobs/profiles"):
        assert_problem(await raw_client.post(path, headers=auth), 403, "program_forbidden")
        assert_problem(
            await raw_client.post(path, params={"program": other}, headers=auth), 403, "program_forbidden"
        )
    assert_problem(await raw_client.post("/v1/settlements", headers=auth), 403, "program_forbidden")
    r = await raw_client.post("/v1/jobs/expire", params={"program": mine}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["expired_points"] == 100
    r = await raw_client.post("/v1/jobs/tier-review", params={"program": mine}, headers=auth)
    assert r.status_code == 200, r.text
    assert (await member(client, mine, "job"))["balance"] == 0
    assert (await member(client, other, "job"))["balance"] == 100  # not this key's program
    assert_problem(
        await client.post("/v1/jobs/expire", params={"program": "NOPE_NOPE"}), 404, "program_not_found"
    )


async def test_transferred_rolled_over_points_do_not_roll_again(
    client: httpx.AsyncClient, ledger_app
) -> None:
    """The recipient's lot of a transfer keeps the sender's expiry date and, now, that its points were
    rolled over already: they used to roll a second time there (250 more points out of nothing)."""
    program = await create_program(client, expiry={"policy": "rolling", "months": 1}, rollover_bps=5000)
    await earn(client, program, "giver", 1000, occurred_at="2026-01-01T00:00:00Z")
    first = await _expire(client, as_of="2026-02-15T00:00:00Z", program=program)
    assert (first["expired_points"], first["rolled_over_points"]) == (500, 500)
    body = {"program": program, "from_member_ref": "giver", "to_member_ref": "taker", "points": 500}
    r = await post(client, "/v1/transfers", body)
    assert r.status_code == 201, r.text
    second = await _expire(client, as_of="2026-03-15T00:00:00Z", program=program)
    assert (second["expired_points"], second["rolled_over_points"]) == (500, 0)
    assert (await member(client, program, "taker"))["balance"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_an_as_of_without_offset_is_refused_by_validation(client: httpx.AsyncClient) -> None:
    for path in ("/v1/jobs/expire", "/v1/jobs/notices", "/v1/settlements"):
        r = await client.post(path, params={"as_of": "2026-01-01T00:00:00"})
        assert_problem(r, 422, "validation_error")
