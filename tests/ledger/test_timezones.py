"""Program time zones (DESIGN §4, issue 14 "Must show" 3): days, months and fixed expiry dates are the
program's, tested on both sides of each boundary."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import assert_problem, create_program, member, post

SHANGHAI = "Asia/Shanghai"


async def _earn_purchase(client: httpx.AsyncClient, program: str, member_ref: str, at: str) -> int:
    body = {
        "program": program,
        "member_ref": member_ref,
        "purchase": {"amount_minor": 100_000, "currency": "CNY"},
        "reference": "p",
        "occurred_at": at,
    }
    r = await post(client, "/v1/earn", body)
    assert r.status_code == 201, r.text
    points: int = r.json()["points"]
    return points


async def test_a_day_cap_resets_at_midnight_in_shanghai(client: httpx.AsyncClient) -> None:
    """1 point per CNY, 100 a day: the day ends at 16:00 UTC, not at 00:00 UTC."""
    program = await create_program(client, timezone=SHANGHAI)
    r = await client.post(
        f"/v1/programs/{program}/rules",
        json={
            "effective_from": "2020-01-01T00:00:00Z",
            "base": {"points": 1, "per_amount_minor": 100},
            "caps": {"per_member_per_day": 100},
        },
    )
    assert r.status_code == 201, r.text
    # 00:00 local on 10 June is 16:00 UTC on 9 June.
    assert await _earn_purchase(client, program, "d", "2025-06-09T15:59:59Z") == 100  # 9 June, 23:59:59 local
    assert await _earn_purchase(client, program, "d", "2025-06-09T15:59:59.999Z") == 0
    assert await _earn_purchase(client, program, "d", "2025-06-09T16:00:00Z") == 100  # 10 June, 00:00 local
    assert await _earn_purchase(client, program, "d", "2025-06-10T08:00:00Z") == 0  # 10 June, 16:00 local
    # UTC's day boundary means nothing here: 23:59 and 00:01 UTC are both 10 June in Shanghai.
    assert await _earn_purchase(client, program, "d", "2025-06-10T15:59:00Z") == 0
    # The same rule in a UTC program resets at 00:00 UTC.
    utc = await create_program(client)
    await client.post(
        f"/v1/programs/{utc}/rules",
        json={
            "effective_from": "2020-01-01T00:00:00Z",
            "base": {"points": 1, "per_amount_minor": 100},
            "caps": {"per_member_per_day": 100},
        },
    )
    assert await _earn_purchase(client, utc, "d", "2025-06-09T15:59:59Z") == 100
    assert await _earn_purchase(client, utc, "d", "2025-06-09T16:00:00Z") == 0
    assert await _earn_purchase(client, utc, "d", "2025-06-10T00:00:00Z") == 100


async def _expire(client: httpx.AsyncClient, program: str, as_of: str) -> dict[str, Any]:
    r = await client.post("/v1/jobs/expire", params={"as_of": as_of, "program": program})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_a_fixed_31_december_expiry_happens_at_midnight_local_time(client: httpx.AsyncClient) -> None:
    program = await create_program(
        client, timezone=SHANGHAI, expiry={"policy": "fixed", "month": 12, "day": 31, "years_after": 0}
    )
    # Earned on 31 December at 23:30 local (15:30 UTC): still this year's lot, expiring 30 minutes later.
    r = await post(
        client,
        "/v1/earn",
        {
            "program": program,
            "member_ref": "x",
            "points": 500,
            "reference": "e",
            "occurred_at": "2024-12-31T15:30:00Z",
        },
    )
    assert r.status_code == 201, r.text
    view = await member(client, program, "x")
    assert [e["expires_at"] for e in view["expiring"]] == ["2024-12-31T16:00:00Z"]  # 1 Jan 00:00 local
    # One second before midnight local nothing expires; at midnight it does.
    await _expire(client, program, "2024-12-31T15:59:59Z")
    assert (await member(client, program, "x"))["balance"] == 500
    await _expire(client, program, "2024-12-31T16:00:00Z")
    assert (await member(client, program, "x"))["balance"] == 0
    # Earned at 00:30 local on 1 January (16:30 UTC on 31 Dec): next year's lot.
    r = await post(
        client,
        "/v1/earn",
        {
            "program": program,
            "member_ref": "y",
            "points": 10,
            "reference": "e",
            "occurred_at": "2024-12-31T16:30:00Z",
        },
    )
    assert r.status_code == 201
    assert [e["expires_at"] for e in (await member(client, program, "y"))["expiring"]] == [
        "2025-12-31T16:00:00Z"
    ]


async def test_rolling_months_are_counted_on_the_local_calendar(client: httpx.AsyncClient) -> None:
    """31 January 20:00 UTC is 1 February 04:00 in Shanghai: one month later is 1 March 04:00 local."""
    program = await create_program(client, timezone=SHANGHAI, expiry={"policy": "rolling", "months": 1})
    r = await post(
        client,
        "/v1/earn",
        {
            "program": program,
            "member_ref": "r",
            "points": 7,
            "reference": "e",
            "occurred_at": "2025-01-31T20:00:00Z",
        },
    )
    assert r.status_code == 201
    assert [e["expires_at"] for e in (await member(client, program, "r"))["expiring"]] == [
        "2025-02-28T20:00:00Z"
    ]


async def test_timezone_is_validated_and_can_change(client: httpx.AsyncClient) -> None:
    body = {"code": "TZBAD", "name": "x", "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"}}
    r = await client.post("/v1/programs", json={**body, "timezone": "Mars/Olympus"})
    assert r.status_code == 422
    program = await create_program(client)
    assert (await client.get(f"/v1/programs/{program}")).json()["timezone"] == "UTC"
    r = await client.patch(f"/v1/programs/{program}", json={"timezone": SHANGHAI})
    assert r.status_code == 200 and r.json()["timezone"] == SHANGHAI
    assert_problem(
        await client.patch(f"/v1/programs/{program}", json={"timezone": "localtime"}), 422, "validation_error"
    )


async def test_finance_days_are_the_programs(client: httpx.AsyncClient, ledger_app: Any) -> None:
    """An earn booked at 17:00 UTC on a day counts on the next day in Shanghai's roll-forward."""
    program = await create_program(client, timezone=SHANGHAI)
    r = await post(
        client, "/v1/earn", {"program": program, "member_ref": "f", "points": 40, "reference": "e"}
    )
    txn = r.json()["id"]
    booked = datetime.combine(
        datetime.now(UTC).date() - timedelta(days=3), datetime.min.time(), UTC
    ) + timedelta(hours=17)
    async with ledger_app.state.db.driver() as conn:
        await conn.execute("UPDATE ledger.postings SET created_at = $2 WHERE txn_id = $1::uuid", txn, booked)
    local_day = booked.date() + timedelta(days=1)
    r = await client.get(
        f"/v1/programs/{program}/liability",
        params={"period": "day", "from": str(booked.date()), "to": str(local_day + timedelta(days=1))},
    )
    rows = {row["period_start"]: row["issued"] for row in r.json()["rows"]}
    assert rows == {str(booked.date()): 0, str(local_day): 40}
    assert date.fromisoformat(r.json()["rows"][0]["period_start"]) == booked.date()
