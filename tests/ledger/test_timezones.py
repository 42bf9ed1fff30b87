"""Program time zones (DESIGN §4, issue 14 "Must show" 3): days, months and fixed expiry dates are the
program's, tested on both sides of each boundary."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from ledger_service.profiles.service import refresh_program
from ledger_service.segments.service import evaluate
from tests.conftest import assert_problem, create_program, earn, member, post, put_rules

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
    await put_rules(
        client, program, base={"points": 1, "per_amount_minor": 100}, caps={"per_member_per_day": 100}
    )
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
    await earn(client, program, "y", 10, occurred_at="2024-12-31T16:30:00Z")
    assert [e["expires_at"] for e in (await member(client, program, "y"))["expiring"]] == [
        "2025-12-31T16:00:00Z"
    ]


async def test_rolling_months_are_counted_on_the_local_calendar(client: httpx.AsyncClient) -> None:
    """31 January 20:00 UTC is 1 February 04:00 in Shanghai: one month later is 1 March 04:00 local."""
    program = await create_program(client, timezone=SHANGHAI, expiry={"policy": "rolling", "months": 1})
    await earn(client, program, "r", 7, occurred_at="2025-01-31T20:00:00Z")
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


async def _profile_at(ledger_app: Any, program: str, member_ref: str, now: datetime) -> dict[str, Any]:
    """The member's profile as the refresh job computes it at `now` (the API's profile is always now)."""
    async with ledger_app.state.db.driver() as conn:
        program_id = await conn.fetchval("SELECT id FROM ledger.programs WHERE code = $1", program)
    await refresh_program(ledger_app.state.db, program_id, now)
    async with ledger_app.state.db.driver() as conn:
        row = await conn.fetchrow(
            "SELECT p.* FROM ledger.member_profiles p WHERE p.program_id = $1 AND p.member_ref = $2",
            program_id,
            member_ref,
        )
    assert row is not None
    return dict(row)


async def test_profile_windows_are_local_days(client: httpx.AsyncClient, ledger_app: Any) -> None:
    """At 10:00 on 10 June in Shanghai the 30 days are 12 May to 10 June, from 00:00 local on 12 May
    (16:00 UTC on 11 May): an earn at 23:30 local on 11 May is outside, one at 00:30 on 12 May inside
    (a UTC day would take it out, 30 times 24 hours would take both in)."""
    program = await create_program(client, timezone=SHANGHAI)
    now = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
    for points, at in (
        (1, "2025-05-11T15:30:00Z"),
        (10, "2025-05-11T16:30:00Z"),
        (100, "2025-06-10T01:00:00Z"),
    ):
        await earn(client, program, "w", points, occurred_at=at)
    # 90 days: from 00:00 local on 13 March (16:00 UTC on 12 March); 365: from 11 June 2024
    await earn(client, program, "w", 1_000, occurred_at="2025-03-12T15:59:59Z")
    await earn(client, program, "w", 10_000, occurred_at="2025-03-12T16:00:00Z")
    await earn(client, program, "w", 100_000, occurred_at="2024-06-10T15:59:59Z")
    await earn(client, program, "w", 1_000_000, occurred_at="2024-06-10T16:00:00Z")
    got = await _profile_at(ledger_app, program, "w", now)
    assert got["earned_points_30d"] == 110 and got["earn_count_30d"] == 2
    assert got["earned_points_90d"] == 10_111 and got["earn_count_90d"] == 4
    assert got["earned_points_365d"] == 1_011_111 and got["earn_count_365d"] == 6
    # the same history in a UTC program: windows from 00:00 UTC on 12 May
    utc = await create_program(client)
    for points, at in ((1, "2025-05-11T23:59:59Z"), (10, "2025-05-12T00:00:00Z")):
        await earn(client, utc, "w", points, occurred_at=at)
    assert (await _profile_at(ledger_app, utc, "w", now))["earned_points_30d"] == 10


async def test_expiring_points_and_tags_count_local_days(client: httpx.AsyncClient, ledger_app: Any) -> None:
    """Lots of one month: "expiring within 30 days" at 10:00 on 10 June local ends at 00:00 on 10 July
    local (16:00 UTC on 9 July), whatever the hour of now."""
    program = await create_program(client, timezone=SHANGHAI, expiry={"policy": "rolling", "months": 1})
    now = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
    await earn(client, program, "in", 5, occurred_at="2025-06-09T16:00:00Z")  # due 16:00 UTC on 9 July
    await earn(client, program, "out", 7, occurred_at="2025-06-09T16:30:00Z")  # due 00:30 local, 10 July
    inside, outside = (
        await _profile_at(ledger_app, program, "in", now),
        await _profile_at(ledger_app, program, "out", now),
    )
    assert inside["expiring_points_30d"] == 5 and "expiring_soon" in inside["tags"]
    assert outside["expiring_points_30d"] == 0 and "expiring_soon" not in outside["tags"]
    assert outside["expiring_points_90d"] == 7
    # "new": first activity on one of the last 30 local days
    await earn(client, program, "old", 1, occurred_at="2025-05-11T15:30:00Z")  # 23:30 local, 11 May
    await earn(client, program, "young", 1, occurred_at="2025-05-11T16:30:00Z")  # 00:30 local, 12 May
    assert "new" not in (await _profile_at(ledger_app, program, "old", now))["tags"]
    assert "new" in (await _profile_at(ledger_app, program, "young", now))["tags"]


async def _expiring_events(ledger_app: Any, program: str) -> list[dict[str, Any]]:
    async with ledger_app.state.db.driver() as conn:
        rows = await conn.fetch(
            "SELECT o.payload::text FROM ledger.outbox o JOIN ledger.programs g ON g.id = o.program_id"
            " WHERE g.code = $1 AND o.type = 'points.expiring' ORDER BY o.id",
            program,
        )
    return [json.loads(r[0]) for r in rows]


async def test_expiry_notices_reach_their_threshold_at_local_midnight(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """A lot due at 04:00 local on 1 March (20:00 UTC on 28 February): 7 days ahead is from 00:00 local on
    22 February (16:00 UTC on 21 February), once; not from 00:00 UTC on 21 February (a UTC day), not
    from 20:00 UTC on 21 February (7 times 24 hours)."""
    program = await create_program(
        client, timezone=SHANGHAI, expiry={"policy": "rolling", "months": 1}, expiry_notices_days=[7]
    )
    await earn(client, program, "n", 30, occurred_at="2025-01-31T20:00:00Z")

    async def run(as_of: str) -> int:
        r = await client.post("/v1/jobs/notices", params={"program": program, "as_of": as_of})
        assert r.status_code == 200, r.text
        events: int = r.json()["events"]
        return events

    assert await run("2025-02-21T00:00:00Z") == 0
    assert await run("2025-02-21T15:59:59Z") == 0
    assert await run("2025-02-21T16:00:00Z") == 1
    assert await run("2025-02-21T20:00:00Z") == 0
    assert await run("2025-02-27T00:00:00Z") == 0
    [event] = await _expiring_events(ledger_app, program)
    assert event["days_before"] == 7 and event["points"] == 30
    assert event["expires_at"] == "2025-02-28T20:00:00.000000Z"
    assert event["last_day"] == "2025-03-01" and event["timezone"] == SHANGHAI


async def test_a_midnight_expiry_is_announced_on_the_local_day(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """Fixed 31 December expiry (00:00 local on 1 January): 30 days ahead is 00:00 local on 2 December,
    and the reminder's last day is 31 December."""
    program = await create_program(
        client,
        timezone=SHANGHAI,
        expiry={"policy": "fixed", "month": 12, "day": 31, "years_after": 0},
        expiry_notices_days=[30],
    )
    await earn(client, program, "f", 9, occurred_at="2024-06-01T00:00:00Z")
    for as_of, events in (
        ("2024-12-01T15:59:59Z", 0),
        ("2024-12-01T16:00:00Z", 1),
        ("2024-12-02T01:00:00Z", 0),
    ):
        r = await client.post("/v1/jobs/notices", params={"program": program, "as_of": as_of})
        assert r.status_code == 200 and r.json()["events"] == events, (as_of, r.text)
    [event] = await _expiring_events(ledger_app, program)
    assert event["last_day"] == "2024-12-31" and event["expires_at"] == "2024-12-31T16:00:00.000000Z"


async def test_days_since_last_earn_counts_local_days(client: httpx.AsyncClient, ledger_app: Any) -> None:
    """At 10:00 local on 10 June, an earn at 23:30 local the day before was 1 day ago (10.5 hours), one at
    00:30 today 0 days ago."""
    program = await create_program(client, timezone=SHANGHAI)
    now = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
    await earn(client, program, "yesterday", 1, occurred_at="2025-06-09T15:30:00Z")
    await earn(client, program, "today", 1, occurred_at="2025-06-09T16:30:00Z")
    criteria = {"all": [{"field": "days_since_last_earn", "op": "eq", "value": 0}]}
    r = await client.post(
        f"/v1/programs/{program}/segments", json={"code": "today", "name": "t", "criteria": criteria}
    )
    assert r.status_code == 201, r.text
    await _profile_at(ledger_app, program, "today", now)
    async with ledger_app.state.db.driver() as conn:
        program_id, segment_id = await conn.fetchrow(
            "SELECT g.id, s.id FROM ledger.segments s JOIN ledger.programs g ON g.id = s.program_id"
            " WHERE g.code = $1",
            program,
        )
    await evaluate(ledger_app.state.db, segment_id, program_id, criteria, now)
    async with ledger_app.state.db.driver() as conn:
        members = await conn.fetch(
            "SELECT member_ref FROM ledger.segment_members WHERE segment_id = $1", segment_id
        )
    assert [m[0] for m in members] == ["today"]
