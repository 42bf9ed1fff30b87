from __future__ import annotations

import httpx

from tests.conftest import create_program, earn, member, post

TIERS = [{"code": "silver", "min_points": 1000}, {"code": "gold", "min_points": 5000}]


async def test_upgrade_at_the_earn_that_crosses_and_history(client: httpx.AsyncClient) -> None:
    program = await create_program(client, tiers=TIERS, tier_window_months=12)
    await earn(client, program, "amy", 999)
    view = await member(client, program, "amy")
    assert view["tier"] == "basic" and view["qualifying_points"] == 999
    assert view["next_tier"] == {"code": "silver", "min_points": 1000, "points_needed": 1}
    await earn(client, program, "amy", 1)
    view = await member(client, program, "amy")
    assert view["tier"] == "silver" and view["tier_since"] is not None
    assert view["next_tier"]["code"] == "gold" and view["next_tier"]["points_needed"] == 4000
    await earn(client, program, "amy", 10000)
    assert (await member(client, program, "amy"))["tier"] == "gold"
    history = (await client.get(f"/v1/programs/{program}/members/amy/tiers")).json()["data"]
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in history] == [
        ("silver", "gold", "earn"),
        ("basic", "silver", "earn"),
    ]


async def test_only_qualifying_kinds_count(client: httpx.AsyncClient) -> None:
    program = await create_program(client, tiers=TIERS, qualifying_kinds=["purchase", "tenure"])
    await earn(client, program, "ben", 5000, kind="bonus")
    await earn(client, program, "ben", 900, kind="tenure")
    view = await member(client, program, "ben")
    assert view["tier"] == "basic" and view["qualifying_points"] == 900 and view["balance"] == 5900


async def test_no_downgrade_on_burn_or_clawback_until_review(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, tiers=TIERS)
    t = await earn(client, program, "cat", 1200)
    assert (await member(client, program, "cat"))["tier"] == "silver"
    r = await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 500, "reason": "return"})
    assert r.status_code == 201
    view = await member(client, program, "cat")
    assert view["tier"] == "silver" and view["qualifying_points"] == 700
    r = await client.post("/v1/jobs/tier-review")
    assert r.status_code == 200 and r.json()["changed"] >= 1
    assert (await member(client, program, "cat"))["tier"] == "basic"
    history = (await client.get(f"/v1/programs/{program}/members/cat/tiers")).json()["data"]
    assert history[0]["reason"] == "review" and history[0]["to_tier"] == "basic"


async def test_points_leave_the_window_and_review_downgrades(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client, tiers=TIERS, tier_window_months=3)
    await earn(client, program, "dee", 6000)
    assert (await member(client, program, "dee"))["tier"] == "gold"
    async with ledger_app.state.db.driver() as conn:  # as if the earn were four months old
        await conn.execute(
            """UPDATE ledger.tier_buckets b SET month = (b.month - interval '4 months')::date
               FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
               WHERE b.account_id = a.id AND p.code = $1""",
            program,
        )
    await earn(client, program, "dee", 1500)
    view = await member(client, program, "dee")
    assert view["tier"] == "gold" and view["qualifying_points"] == 1500  # no downgrade at an earn
    assert (await client.post("/v1/jobs/tier-review")).status_code == 200
    assert (await member(client, program, "dee"))["tier"] == "silver"
    # a second review changes nothing
    await client.post("/v1/jobs/tier-review")
    history = (await client.get(f"/v1/programs/{program}/members/dee/tiers")).json()["data"]
    assert [h["to_tier"] for h in history] == ["silver", "gold"]
