from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import create_program, earn, member, post
from tests.ledger.invariants import check_ledger_invariants


async def _report(client: httpx.AsyncClient, program: str, **params) -> dict:
    r = await client.get(f"/v1/programs/{program}/report", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _identity(rep: dict) -> None:
    # DESIGN §7 invariant 4: earned = spent + expired + reversed + outstanding (with adjustments)
    assert rep["issued"] + rep["adjusted"] + rep["refunded_redemptions"] == (
        rep["redeemed"]
        + rep["expired"]
        + rep["reversed_earns"]
        + rep["outstanding"]
        - rep["outstanding_at_start"]
    ), rep


async def test_report_equals_sums_over_thousands_of_transactions(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await create_program(
        client,
        cash_value={"points": 500, "cash_minor": 100, "currency": "CNY"},
        expiry={"policy": "rolling", "months": 1},
    )
    rng = random.Random(7)
    members = [f"r{i}" for i in range(40)]
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            who = rng.choice(members)
            extra = (
                {"occurred_at": (datetime.now(UTC) - timedelta(days=45)).isoformat()} if i % 10 == 0 else {}
            )
            r = await post(
                client,
                "/v1/earn",
                {
                    "program": program,
                    "member_ref": who,
                    "points": rng.randint(1, 500),
                    "reference": "e",
                    **extra,
                    "purchase": {"amount_minor": 100, "currency": "CNY", "merchant_id": f"M{i % 5}"},
                },
            )
            assert r.status_code == 201
            if i % 3 == 0:
                b = await post(
                    client,
                    "/v1/burn",
                    {"program": program, "member_ref": who, "points": rng.randint(1, 300), "reference": "b"},
                )
                if b.status_code == 201 and i % 2 == 0:
                    await post(
                        client, f"/v1/transactions/{b.json()['id']}/reverse", {"reason": "r", "points": 1}
                    )
            if i % 7 == 0:
                await post(client, f"/v1/transactions/{r.json()['id']}/reverse", {"reason": "c", "points": 1})

    await asyncio.gather(*(one(i) for i in range(1500)))
    await client.post("/v1/jobs/expire")
    rep = await _report(client, program)
    async with ledger_app.state.db.driver() as conn:
        sums = {
            r["type"]: r
            for r in await conn.fetch(
                """SELECT t.type, sum(po.amount) AS amount, count(*) AS n FROM ledger.postings po
               JOIN ledger.transactions t ON t.id = po.txn_id JOIN ledger.accounts a ON a.id = po.account_id
               JOIN ledger.programs p ON p.id = a.program_id
               WHERE p.code = $1 AND a.kind = 'member' GROUP BY t.type""",
                program,
            )
        }
        by_merchant = {
            r["merchant_id"]: r["points"]
            for r in await conn.fetch(
                """SELECT t.merchant_id, sum(t.points) AS points FROM ledger.transactions t
               JOIN ledger.programs p ON p.id = t.program_id WHERE p.code = $1 AND t.type = 'earn'
               GROUP BY t.merchant_id""",
                program,
            )
        }
    balances = sum([(await member(client, program, m))["balance"] for m in members])
    assert rep["transactions"] >= 2000
    assert rep["issued"] == sums["earn"]["amount"]
    assert rep["redeemed"] == -sums["burn"]["amount"]
    assert rep["expired"] == -sums["expiry"]["amount"] > 0
    assert rep["reversed_earns"] - rep["refunded_redemptions"] == -sums["reversal"]["amount"]
    assert rep["outstanding"] == balances
    assert rep["liability_cash_minor"] == balances * 100 // 500
    assert rep["redemption_rate_bps"] == rep["redeemed"] * 10000 // rep["issued"]
    assert {m["merchant_id"]: m["points"] for m in rep["issued_by_merchant"]} == by_merchant
    _identity(rep)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_report_period_and_validation(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "p1", 100)
    now = datetime.now(UTC)
    empty = await _report(
        client,
        program,
        **{"from": (now - timedelta(days=9)).isoformat(), "to": (now - timedelta(days=8)).isoformat()},
    )
    assert empty["issued"] == 0 and empty["outstanding"] == 0 and empty["redemption_rate_bps"] is None
    r = await client.get(
        f"/v1/programs/{program}/report",
        params={"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_period"
    r = await client.get("/v1/programs/NOPE_XYZ/report")
    assert r.status_code == 404


OPS = st.lists(
    st.tuples(
        st.sampled_from(["earn", "old_earn", "burn", "hold_capture", "reverse", "expire", "adjust"]),
        st.integers(0, 2),
        st.integers(1, 300),
    ),
    min_size=20,
    max_size=60,
)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS)
async def test_invariant_4_after_random_operations(client: httpx.AsyncClient, ledger_app, ops) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1}, rollover_bps=1000)
    txns: list[str] = []
    for name, m, pts in ops:
        who = f"h{m}"
        if name in ("earn", "old_earn"):
            extra = (
                {"occurred_at": (datetime.now(UTC) - timedelta(days=40)).isoformat()}
                if name == "old_earn"
                else {}
            )
            txns.append((await earn(client, program, who, pts, **extra))["id"])
        elif name == "burn":
            r = await post(
                client, "/v1/burn", {"program": program, "member_ref": who, "points": pts, "reference": "b"}
            )
            if r.status_code == 201:
                txns.append(r.json()["id"])
        elif name == "hold_capture":
            r = await post(
                client, "/v1/holds", {"program": program, "member_ref": who, "points": pts, "reference": "h"}
            )
            if r.status_code == 201:
                c = await post(client, f"/v1/holds/{r.json()['id']}/capture", {"points": max(1, pts // 2)})
                txns.append(c.json()["id"])
        elif name == "reverse" and txns:
            await post(
                client,
                f"/v1/transactions/{txns[pts % len(txns)]}/reverse",
                {"reason": "r", "points": 1 + pts % 50},
            )
        elif name == "adjust":
            await post(
                client,
                "/v1/adjustments",
                {"program": program, "member_ref": who, "points": pts, "reason": "a"},
            )
        elif name == "expire":
            assert (await client.post("/v1/jobs/expire")).status_code == 200
    rep = await _report(client, program)
    _identity(rep)
    assert rep["outstanding"] == sum([(await member(client, program, f"h{i}"))["balance"] for i in range(3)])
    await check_ledger_invariants(ledger_app.state.db, program)
