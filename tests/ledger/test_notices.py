"""Expiry notices once per lot and threshold, and the one_down tier policy (DESIGN §10)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import assert_problem, create_program, earn, make_key, move, post


async def _expiring(client: httpx.AsyncClient, program: str) -> list[tuple[str, int, int]]:
    """(member, days_before, points) of every points.expiring event of the program, in feed order."""
    out, cursor = [], 0
    while True:
        page = (
            await client.get("/v1/events", params={"after": cursor, "limit": 1000, "type": "points.expiring"})
        ).json()
        out += [
            (e["data"]["member_ref"], e["data"]["days_before"], e["data"]["points"])
            for e in page["data"]
            if e["data"]["program"] == program
        ]
        if page["next_cursor"] == cursor:
            return out
        cursor = page["next_cursor"]


async def _notices(client: httpx.AsyncClient, program: str, as_of: datetime) -> dict[str, Any]:
    r = await client.post("/v1/jobs/notices", params={"program": program, "as_of": as_of.isoformat()})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_notice_once_per_lot_and_threshold(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await create_program(
        client, expiry={"policy": "rolling", "months": 2}, expiry_notices_days=[7, 30]
    )
    assert (await client.get(f"/v1/programs/{program}")).json()["expiry_notices_days"] == [30, 7]
    now = datetime.now(UTC)
    # lots of two months from occurred_at: due in about 3, 25 and 50 days
    for member, days_ago, points in (
        ("soon", 58, 100),
        ("later", 36, 200),
        ("far", 10, 300),
        ("spent", 58, 40),
    ):
        await earn(client, program, member, points, occurred_at=(now - timedelta(days=days_ago)).isoformat())
    await move(client, "burn", program, "spent", 40)  # nothing left to warn about
    async with ledger_app.state.db.driver() as conn:
        due = dict(
            await conn.fetch(
                "SELECT a.member_ref, l.expires_at FROM ledger.lots l"
                " JOIN ledger.accounts a ON a.id = l.account_id"
                " JOIN ledger.programs g ON g.id = l.program_id WHERE g.code = $1",
                program,
            )
        )
    assert timedelta(days=7) > due["soon"] - now > timedelta(days=1)
    assert timedelta(days=30) > due["later"] - now > timedelta(days=20)

    # ten days ago, "soon" was within 30 days of its expiry, not yet within 7
    first = await _notices(client, program, now - timedelta(days=10))
    assert first["events"] == 1 and await _expiring(client, program) == [("soon", 30, 100)]
    # now: "soon" reaches 7 days; "later" is seen for the first time, within 30
    runs = await asyncio.gather(*(_notices(client, program, now) for _ in range(4)))
    assert sum(r["events"] for r in runs) == 2
    assert sorted(await _expiring(client, program)) == [
        ("later", 30, 200),
        ("soon", 7, 100),
        ("soon", 30, 100),
    ]
    again = await _notices(client, program, now)
    assert again["events"] == 0

    # a lot first seen inside both thresholds gets one event, for the nearer
    late = await create_program(
        client, expiry={"policy": "rolling", "months": 2}, expiry_notices_days=[30, 7]
    )
    await earn(client, late, "m", 10, occurred_at=(now - timedelta(days=58)).isoformat())
    assert (await _notices(client, late, now))["events"] == 1
    assert await _expiring(client, late) == [("m", 7, 10)]
    assert (await _notices(client, late, now))["events"] == 0


async def test_notice_job_scoping_and_validation(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await create_program(client, expiry_notices_days=[30])
    limited = await make_key(ledger_app, ["ledger:admin"], programs=[program])
    headers = {"Authorization": f"Bearer {limited}"}
    assert_problem(await client.post("/v1/jobs/notices", headers=headers), 403, "program_forbidden")
    r = await client.post("/v1/jobs/notices", params={"program": program}, headers=headers)
    assert r.status_code == 200, r.text
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert_problem(await client.post("/v1/jobs/notices", params={"as_of": future}), 422, "as_of_in_future")
    body = {"code": "BADNOTICE", "name": "x", "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"}}
    for days in ([0], [30, 30], [1, 2, 3, 4, 5, 6]):
        r = await client.post("/v1/programs", json={**body, "expiry_notices_days": days})
        assert_problem(r, 422, "validation_error")


async def _tier_after_reviews(client: httpx.AsyncClient, policy: str) -> list[str]:
    tiers = [{"code": "silver", "min_points": 100}, {"code": "gold", "min_points": 500},
             {"code": "platinum", "min_points": 1000}]  # fmt: skip
    program = await create_program(client, tiers=tiers, tier_downgrade=policy)
    txn = await earn(client, program, "vip", 1200)
    member = (await client.get(f"/v1/programs/{program}/members/vip")).json()
    seen = [member["tier"]]
    r = await post(client, f"/v1/transactions/{txn['id']}/reverse", {"reason": "fraud"})
    assert r.status_code == 201, r.text  # qualifying points back to 0
    for _ in range(4):
        assert (await client.post("/v1/jobs/tier-review")).status_code == 200
        seen.append((await client.get(f"/v1/programs/{program}/members/vip")).json()["tier"])
    return seen


async def test_one_down_moves_one_tier_per_review(client: httpx.AsyncClient) -> None:
    assert await _tier_after_reviews(client, "one_down") == ["platinum", "gold", "silver", "basic", "basic"]
    assert await _tier_after_reviews(client, "to_qualified") == [
        "platinum",
        "basic",
        "basic",
        "basic",
        "basic",
    ]
