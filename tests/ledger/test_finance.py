"""Finance (DESIGN §9): the liability roll-forward, its aging and issuance cohorts, held to independent
sums over postings and lots of the same program."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from ledger_service.finance.service import add_months
from tests.conftest import assert_problem, create_program, earn, fetch_value, make_key, move, post


async def _balances(app: Any, program: str) -> int:
    value: int = await fetch_value(
        app,
        "SELECT coalesce(sum(a.balance), 0)::bigint FROM ledger.accounts a JOIN ledger.programs g"
        " ON g.id = a.program_id WHERE g.code = $1 AND a.kind = 'member'",
        program,
    )
    return value


async def _backdate(app: Any, txn_ids: list[str], at: datetime) -> None:
    """Books these transactions (postings, lots, moves' transactions) as if recorded at `at`."""
    async with app.state.db.driver() as conn, conn.transaction():
        await conn.execute(
            "UPDATE ledger.transactions SET created_at = $2 WHERE id = ANY($1::uuid[])", txn_ids, at
        )
        await conn.execute(
            "UPDATE ledger.postings SET created_at = $2 WHERE txn_id = ANY($1::uuid[])", txn_ids, at
        )
        await conn.execute(
            "UPDATE ledger.lots SET created_at = $2 WHERE txn_id = ANY($1::uuid[])", txn_ids, at
        )


async def _ok(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _assert_closes(rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        for unit in ("", "_cash_minor"):
            g = {
                k: row[k + unit] for k in ("opening", "issued", "redeemed", "expired", "adjusted", "closing")
            }
            assert (
                g["closing"] == g["opening"] + g["issued"] - g["redeemed"] - g["expired"] + g["adjusted"]
            ), row
        if i:
            assert row["opening"] == rows[i - 1]["closing"]
            assert row["opening_cash_minor"] == rows[i - 1]["closing_cash_minor"]
            assert row["period_start"] == rows[i - 1]["period_end"]


async def test_roll_forward_closes_and_ends_at_outstanding(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    # 3 points are worth 1 minor unit: every cash figure needs rounding
    program = await create_program(client, cash_value={"points": 3, "cash_minor": 1, "currency": "CNY"})
    month0 = add_months(datetime.now(UTC).date(), -2)
    earns = [(await earn(client, program, m, p))["id"] for m, p in (("a", 1000), ("b", 500), ("c", 301))]
    await _backdate(ledger_app, earns, datetime.combine(month0, datetime.min.time(), UTC) + timedelta(days=3))
    burn = await move(client, "burn", program, "a", 200)
    await _backdate(
        ledger_app, [burn["id"]], datetime.combine(add_months(month0, 1), datetime.min.time(), UTC)
    )
    # this month: a clawback, a refund, a transfer, adjustments, a hold captured
    r = await post(client, f"/v1/transactions/{earns[1]}/reverse", {"points": 100, "reason": "returned"})
    assert r.status_code == 201, r.text
    r = await post(client, f"/v1/transactions/{burn['id']}/reverse", {"points": 50, "reason": "refund"})
    assert r.status_code == 201, r.text
    body = {"program": program, "from_member_ref": "a", "to_member_ref": "c", "points": 100}
    assert (await post(client, "/v1/transfers", body)).status_code == 201
    for member, points in (("c", 40), ("a", -10)):
        body = {"program": program, "member_ref": member, "points": points, "reason": "ops"}
        assert (await post(client, "/v1/adjustments", body)).status_code == 201
    hold = await post(
        client, "/v1/holds", {"program": program, "member_ref": "c", "points": 61, "reference": "h"}
    )
    assert (await post(client, f"/v1/holds/{hold.json()['id']}/capture", {})).status_code == 201

    start, end = add_months(month0, -1), add_months(month0, 3)
    report = await _ok(client, f"/v1/programs/{program}/liability", **{"from": str(start), "to": str(end)})
    rows = report["rows"]
    assert [r["period_start"] for r in rows] == [str(add_months(start, i)) for i in range(4)]
    _assert_closes(rows)
    assert [r["issued"] for r in rows] == [0, 1801, 0, -100]
    assert [r["redeemed"] for r in rows] == [0, 0, 200, 61 - 50]
    assert [r["adjusted"] for r in rows] == [0, 0, 0, 30]
    assert rows[0]["opening"] == 0
    outstanding = await _balances(ledger_app, program)
    assert rows[-1]["closing"] == report["outstanding"] == outstanding == 1801 - 100 - 200 + 50 + 30 - 61
    assert rows[-1]["closing_cash_minor"] == outstanding // 3
    assert rows[1]["issued_cash_minor"] == 1801 // 3

    days = await _ok(
        client, f"/v1/programs/{program}/liability", period="day", **{"from": str(month0), "to": str(end)}
    )
    _assert_closes(days["rows"])
    assert days["rows"][3]["issued"] == 1801 and days["rows"][-1]["closing"] == outstanding
    assert sum(r["redeemed"] for r in days["rows"]) == 211


async def test_roll_forward_validation(client: httpx.AsyncClient, ledger_app: Any, program: str) -> None:
    path = f"/v1/programs/{program}/liability"
    assert_problem(
        await client.get(path, params={"from": "2026-05-01", "to": "2026-05-01"}), 422, "invalid_period"
    )
    r = await client.get(path, params={"from": "2000-01-01", "to": "2026-01-01", "period": "day"})
    assert_problem(r, 422, "period_range_too_large")
    assert_problem(await client.get(path, params={"period": "week"}), 422, "validation_error")
    assert_problem(await client.get("/v1/programs/NOPE/liability"), 404, "program_not_found")
    other = await create_program(client)
    limited = await make_key(ledger_app, ["ledger:read"], programs=[other])
    r = await client.get(path, headers={"Authorization": f"Bearer {limited}"})
    assert r.status_code == 403, r.text
    default = await _ok(client, path)
    assert len(default["rows"]) == 12
    assert default["rows"][-1]["period_end"] == str(add_months(datetime.now(UTC).date(), 1))


async def test_aging_buckets_sum_to_outstanding(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await create_program(
        client,
        expiry={"policy": "rolling", "months": 24},
        allow_negative=True,
        cash_value={"points": 10, "cash_minor": 7, "currency": "CNY"},
    )
    now = datetime.now(UTC)
    # rolling 24 months from occurred_at: due in ~2, ~4, ~9 and 24 months
    for member, months_ago, points in (("a", 22, 100), ("a", 20, 200), ("b", 15, 400), ("c", 0, 800)):
        occurred = (now - timedelta(days=30.5 * months_ago)).isoformat()
        await earn(client, program, member, points, occurred_at=occurred)
    await move(client, "burn", program, "a", 150)  # takes the earliest-expiring lot first
    body = {"program": program, "member_ref": "d", "points": -70, "reason": "debt"}
    assert (await post(client, "/v1/adjustments", body)).status_code == 201

    aging = await _ok(client, f"/v1/programs/{program}/liability/aging")
    buckets = {b["bucket"]: b["points"] for b in aging["buckets"]}
    assert buckets == {"0-3m": 0, "3-6m": 150, "6-12m": 400, "12m+": 800, "never": 0}
    assert aging["negative_balances"] == -70
    assert aging["outstanding"] == await _balances(ledger_app, program) == 1350 - 70
    assert {b["bucket"]: b["cash_minor"] for b in aging["buckets"]}["6-12m"] == 280

    later = (now + timedelta(days=200)).isoformat()
    shifted = await _ok(client, f"/v1/programs/{program}/liability/aging", as_of=later)
    assert {b["bucket"]: b["points"] for b in shifted["buckets"]}["0-3m"] == 150 + 400
    past = (now - timedelta(days=2)).isoformat()
    r = await client.get(f"/v1/programs/{program}/liability/aging", params={"as_of": past})
    assert_problem(r, 422, "as_of_in_past")


async def test_cohorts_follow_lots_and_curves(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 1})
    today = datetime.now(UTC).date()
    old_month = add_months(today, -14)
    issued_at = datetime.combine(old_month, datetime.min.time(), UTC) + timedelta(days=2)
    old = [(await earn(client, program, m, 1000))["id"] for m in ("a", "b")]
    await _backdate(ledger_app, old, issued_at)
    async with ledger_app.state.db.driver() as conn:  # as their policy would have dated them
        await conn.execute(
            "UPDATE ledger.lots SET expires_at = $2 WHERE txn_id = ANY($1::uuid[])",
            old,
            issued_at + timedelta(days=31),
        )
    burn_soon = await move(client, "burn", program, "a", 300)
    await _backdate(ledger_app, [burn_soon["id"]], issued_at + timedelta(days=10))
    burn_late = await move(client, "burn", program, "a", 200)
    await _backdate(ledger_app, [burn_late["id"]], issued_at + timedelta(days=100))
    r = await post(client, f"/v1/transactions/{burn_late['id']}/reverse", {"points": 50, "reason": "refund"})
    assert r.status_code == 201, r.text
    body = {"program": program, "from_member_ref": "b", "to_member_ref": "c", "points": 100}
    assert (await post(client, "/v1/transfers", body)).status_code == 201
    fresh = await earn(client, program, "d", 70)
    # the old lots are long due: expiry takes what is left of them
    r = await client.post("/v1/jobs/expire")
    assert r.status_code == 200, r.text

    params = {"from": str(add_months(today, -15)), "to": str(add_months(today, 1))}
    cohorts = (await _ok(client, f"/v1/programs/{program}/cohorts", **params))["cohorts"]
    assert [c["month"] for c in cohorts] == [str(old_month), str(add_months(today, 0))]
    first, current = cohorts
    assert first["lots"] == 2 and first["issued"] == 2000
    assert first["redeemed"] == 300 + 200 - 50 and first["transferred"] == 100 and first["reversed"] == 0
    assert first["outstanding"] == 0
    assert first["expired"] == 2000 - 450 - 100
    curve = {p["months"]: p for p in first["curve"]}
    assert curve[1]["redeemed"] == 300 and curve[1]["share_bps"] == 1500
    # the refund is netted from the move it gave back, whatever its age
    assert curve[6]["redeemed"] == curve[12]["redeemed"] == 450
    assert all(p["complete"] for p in first["curve"])
    assert current["issued"] == 70 and current["outstanding"] == 70 and not current["curve"][0]["complete"]
    assert fresh["points"] == 70
    assert (await _ok(client, f"/v1/programs/{program}/cohorts"))["from"] == str(add_months(today, -11))
    limited_params = {"from": "2026-05-01", "to": "2026-04-01"}
    r = await client.get(f"/v1/programs/{program}/cohorts", params=limited_params)
    assert_problem(r, 422, "invalid_period")


async def test_figures_never_overflow(client: httpx.AsyncClient, ledger_app: Any) -> None:
    """Sums in numeric: two members near the 64-bit limit do not break a report."""
    program = await create_program(client)
    big = 2**62
    async with ledger_app.state.db.driver() as conn:
        # stored directly: the API refuses such earns, but no stored value may break a report
        await conn.execute(
            """
            WITH g AS (SELECT id, issuance_account FROM ledger.programs WHERE code = $1),
                 acc AS (INSERT INTO ledger.accounts (program_id, kind, member_ref, balance)
                         SELECT g.id, 'member', m, $2 FROM g, unnest(ARRAY['x', 'y']) m
                         RETURNING id, program_id),
                 txn AS (INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref,
                                                          points, kind, occurred_at)
                         SELECT ledger.new_id(), acc.program_id, 'earn', acc.id, 'x', $2, 'purchase', now()
                         FROM acc RETURNING id, account_id)
            INSERT INTO ledger.postings (txn_id, account_id, amount)
            SELECT txn.id, txn.account_id, $2 FROM txn
            UNION ALL SELECT txn.id, g.issuance_account, -$2 FROM txn, g
            """,
            program,
            big,
        )
    report = await _ok(client, f"/v1/programs/{program}/liability")
    assert report["rows"][-1]["closing"] == report["outstanding"] == 2 * big
    assert (await _ok(client, f"/v1/programs/{program}/cohorts"))["cohorts"] == []
    assert date.fromisoformat(report["to"]) > datetime.now(UTC).date()
