"""Member profiles, segments and targeted campaigns (DESIGN §10), against independent sums over the
ledger's postings."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from ledger_service.segments.criteria import FIELDS, OPS, CriteriaError, compile_criteria
from tests.conftest import assert_problem, create_program, earn, make_key, move, post

WINDOWS = (30, 90, 365)
MCCS = ("5411", "5812", "5814", "4511", "5999", "7011", "5541")


async def _profiles_job(client: httpx.AsyncClient, program: str) -> dict[str, Any]:
    r = await client.post("/v1/jobs/profiles", params={"program": program})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _profile(client: httpx.AsyncClient, program: str, member: str) -> dict[str, Any]:
    r = await client.get(f"/v1/programs/{program}/members/{member}/profile")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _local_midnight(now: datetime, tz: str, days: int) -> datetime:
    """Midnight in the program's zone, `days` local days after the day of `now`."""
    return datetime.combine(now.astimezone(ZoneInfo(tz)).date() + timedelta(days=days), time(), ZoneInfo(tz))


def _expected(rows: list[Any], lots: list[Any], now: datetime, tz: str) -> dict[str, dict[str, Any]]:
    """Each member's figures from their postings, computed in Python (not by the SQL under test). A window
    of N days is the local day of `now` and the N - 1 before it, in the program's zone `tz`."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    mccs: dict[str, Counter[str]] = defaultdict(Counter)
    channels: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        m, amount, at = out[r["member_ref"]], r["amount"], r["occurred_at"]
        flow = None
        if r["type"] == "earn" or (r["type"] == "reversal" and r["kind"] == "earn"):
            flow = "earn"
        elif r["type"] in ("burn", "capture") or (
            r["type"] == "reversal" and r["kind"] in ("burn", "capture")
        ):
            flow = "redeem"
        for days in WINDOWS:
            inside = at >= _local_midnight(now, tz, 1 - days)
            if flow == "earn" and inside:
                m[f"earned_points_{days}d"] += amount
            if flow == "redeem" and inside:
                m[f"redeemed_points_{days}d"] -= amount
            if r["type"] == "earn" and inside:
                m[f"earn_count_{days}d"] += 1
        if flow == "earn":
            m["lifetime_earned"] += amount
        if flow == "redeem":
            m["lifetime_redeemed"] -= amount
        if r["type"] == "expiry":
            m["lifetime_expired"] -= amount
        if at >= _local_midnight(now, tz, -364):
            if r["type"] == "earn" and r["mcc"]:
                mccs[r["member_ref"]][r["mcc"]] += 1
            if r["channel"]:
                channels[r["member_ref"]].add(r["channel"])
    for lot in lots:
        for days in (30, 90):
            if lot["expires_at"] <= _local_midnight(now, tz, days):
                out[lot["member_ref"]][f"expiring_points_{days}d"] += lot["remaining"]
    for member, figures in out.items():
        ranked = sorted(mccs[member].items(), key=lambda kv: (-kv[1], kv[0]))
        figures["top_mcc"] = [mcc for mcc, _ in ranked[:5]]
        figures["channels"] = sorted(channels[member])
    return out


async def test_profiles_equal_independent_sums_over_postings(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    tz = "Asia/Shanghai"
    program = await create_program(
        client, expiry={"policy": "rolling", "months": 13}, allow_negative=True, timezone=tz
    )
    rnd = random.Random(15)
    members = [f"m{i}" for i in range(40)]
    now = datetime.now(UTC)
    earns: list[str] = []
    for _ in range(800):
        member = rnd.choice(members)
        roll = rnd.random()
        if roll < 0.6 or not earns:
            purchase = {"amount_minor": 100, "currency": "CNY", "mcc": rnd.choice(MCCS)}
            if rnd.random() < 0.7:
                purchase["channel"] = rnd.choice(("pos", "online", "app"))
            occurred = now - timedelta(days=rnd.uniform(0, 420), seconds=10)
            body = await earn(
                client,
                program,
                member,
                rnd.randint(1, 500),
                purchase=purchase,
                occurred_at=occurred.isoformat(),
            )
            earns.append(body["id"])
        elif roll < 0.85:
            r = await post(
                client,
                "/v1/burn",
                {"program": program, "member_ref": member, "points": rnd.randint(1, 100), "reference": "b"},
            )
            assert r.status_code in (201, 422), r.text
        elif roll < 0.95:
            r = await post(
                client,
                f"/v1/transactions/{rnd.choice(earns)}/reverse",
                {"points": rnd.randint(1, 20), "reason": "returned"},
            )
            assert r.status_code in (201, 422), r.text
        else:
            other = rnd.choice([m for m in members if m != member])
            body = {"program": program, "from_member_ref": member, "to_member_ref": other, "points": 5}
            assert (await post(client, "/v1/transfers", body)).status_code in (201, 422)
    r = await client.post("/v1/jobs/expire")
    assert r.status_code == 200, r.text

    run = await _profiles_job(client, program)
    assert run["members"] == len({m for m in members})
    async with ledger_app.state.db.driver() as conn:
        rows = await conn.fetch(
            """SELECT a.member_ref, po.amount, t.type, t.kind, t.occurred_at, t.mcc, t.channel
               FROM ledger.postings po JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
               JOIN ledger.transactions t ON t.id = po.txn_id JOIN ledger.programs g ON g.id = a.program_id
               WHERE g.code = $1""",
            program,
        )
        lots = await conn.fetch(
            """SELECT a.member_ref, l.remaining, l.expires_at FROM ledger.lots l
               JOIN ledger.accounts a ON a.id = l.account_id JOIN ledger.programs g ON g.id = a.program_id
               WHERE g.code = $1 AND l.remaining > 0 AND l.expires_at IS NOT NULL""",
            program,
        )
        balances = dict(
            await conn.fetch(
                "SELECT a.member_ref, a.balance FROM ledger.accounts a"
                " JOIN ledger.programs g ON g.id = a.program_id"
                " WHERE g.code = $1 AND a.kind = 'member'",
                program,
            )
        )
    # the profiles were computed at the job's start; the windows here use the same instant
    first = await _profile(client, program, members[0])
    at = datetime.fromisoformat(first["refreshed_at"])
    expected = _expected(rows, lots, at, tz)
    for member in members:
        got = await _profile(client, program, member)
        want = expected[member]
        # the read above recomputed this member at a later instant: compare with that one's windows
        want = _expected(
            [r for r in rows if r["member_ref"] == member],
            [lot for lot in lots if lot["member_ref"] == member],
            datetime.fromisoformat(got["refreshed_at"]),
            tz,
        )[member]
        for name in [
            f"{k}_{d}d" for k in ("earned_points", "earn_count", "redeemed_points") for d in WINDOWS
        ] + [
            "lifetime_earned",
            "lifetime_redeemed",
            "lifetime_expired",
            "expiring_points_30d",
            "expiring_points_90d",
            "top_mcc",
            "channels",
        ]:
            assert got[name] == want[name], (member, name, got[name], want[name])
        assert got["balance"] == balances[member]
    assert any(p > 0 for p in (expected[m]["lifetime_expired"] for m in members))


async def test_tags(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await create_program(client, expiry={"policy": "rolling", "months": 3})
    now = datetime.now(UTC)

    def ago(days: int) -> str:
        return (now - timedelta(days=days)).isoformat()

    await earn(client, program, "fresh", 100, occurred_at=ago(5))
    await earn(client, program, "expiring", 10, occurred_at=ago(80))  # due in about 10 days
    await earn(client, program, "sleeper", 50, occurred_at=ago(200))  # expired by the job below
    await earn(client, program, "spender", 40, occurred_at=ago(1))
    await move(client, "burn", program, "spender", 10)
    for i in range(20):  # 24 earners: the 90th percentile is 40; above it only 50 and 100
        await earn(client, program, f"p{i}", i + 1)
    assert (await client.post("/v1/jobs/expire")).status_code == 200
    await _profiles_job(client, program)
    members = ("fresh", "expiring", "sleeper", "spender", "p19")
    tags = {m: set((await _profile(client, program, m))["tags"]) for m in members}
    assert tags["fresh"] == {"new", "active", "never_redeemed", "high_value"}
    assert tags["expiring"] == {"active", "never_redeemed", "expiring_soon"}
    assert tags["sleeper"] == {"dormant", "never_redeemed", "high_value"}  # high value, gone quiet
    assert tags["spender"] == {"new", "active"}
    assert tags["p19"] == {"new", "active", "never_redeemed"}
    assert (await _profile(client, program, "sleeper"))["lifetime_expired"] == 50
    r = await client.get(f"/v1/programs/{program}/members/nobody/profile")
    assert_problem(r, 404, "member_not_found")


def test_every_field_and_op_compiles_or_is_refused() -> None:
    values: dict[str, Any] = {"tier": "gold", "tag": "dormant", "mcc": "5411", "channel": "app"}
    for field in FIELDS:
        for op in OPS:
            textual = field in values
            value: Any
            if op == "in":
                value = [values.get(field, 5)]
            elif op == "between":
                value = [1, 9]
            else:
                value = values.get(field, 5)
            criteria = {"all": [{"field": field, "op": op, "value": value}]}
            if textual and op in ("gte", "lte", "between"):
                with pytest.raises(CriteriaError):
                    compile_criteria(criteria)
            else:
                compiled = compile_criteria(criteria)
                assert compiled.params and "$2" in compiled.sql
    nested = compile_criteria(
        {
            "any": [
                {
                    "all": [
                        {"field": "balance", "op": "gte", "value": 1},
                        {"field": "tag", "op": "ne", "value": "new"},
                    ]
                },
                {"field": "days_since_last_earn", "op": "between", "value": [30, 90]},
            ]
        },
        base=3,
    )
    assert nested.sql.count("$") == 5 and "$4" in nested.sql and nested.params == [1, "new", 30, 90]
    for bad in (
        {"all": []},
        {"any": [{"field": "nope", "op": "eq", "value": 1}]},
        {"all": [{"field": "balance", "op": "like", "value": 1}]},
        {"all": [{"field": "balance", "op": "gte", "value": "10"}]},
        {"all": [{"field": "balance", "op": "gte", "value": True}]},
        {"all": [{"field": "balance", "op": "between", "value": [9, 1]}]},
        {"all": [{"field": "tag", "op": "eq", "value": "vip"}]},
        {"all": [{"field": "mcc", "op": "in", "value": []}]},
        {"none": [{"field": "balance", "op": "eq", "value": 1}]},
        {"all": [{"field": "balance", "op": "eq"}]},
        {
            "all": [
                {
                    "all": [
                        {
                            "all": [
                                {"all": [{"all": [{"all": [{"field": "balance", "op": "eq", "value": 1}]}]}]}
                            ]
                        }
                    ]
                }
            ]
        },
    ):
        with pytest.raises(CriteriaError):
            compile_criteria(bad)


async def _feed_end(client: httpx.AsyncClient) -> int:
    cursor = 0
    while True:
        page = (await client.get("/v1/events", params={"after": cursor, "limit": 1000})).json()
        if page["next_cursor"] == cursor:
            return cursor
        cursor = page["next_cursor"]


async def _segment(
    client: httpx.AsyncClient, program: str, code: str, criteria: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/v1/programs/{program}/segments", json={"code": code, "name": code, "criteria": criteria}
    )


async def test_segments_materialize_with_events_and_export(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await create_program(client)
    for i in range(12):
        await earn(
            client,
            program,
            f"s{i:02}",
            100 * (i + 1),
            purchase={"amount_minor": 1, "currency": "CNY", "mcc": "5411" if i % 2 else "5812"},
        )
    await _profiles_job(client, program)
    criteria = {
        "all": [
            {"field": "earned_points_30d", "op": "gte", "value": 500},
            {
                "any": [
                    {"field": "mcc", "op": "eq", "value": "5411"},
                    {"field": "balance", "op": "gte", "value": 1200},
                ]
            },
        ]
    }
    r = await _segment(client, program, "big-grocers", criteria)
    assert r.status_code == 201, r.text
    # 500+ points: s04..s11; of those, 5411 on odd i (s05, s07, s09, s11), or balance 1200 (s11)
    assert r.json()["member_count"] == 4 and r.json()["refreshed_at"]
    assert_problem(await _segment(client, program, "big-grocers", criteria), 409, "segment_exists")
    page = (
        await client.get(f"/v1/programs/{program}/segments/big-grocers/members", params={"limit": 3})
    ).json()
    more = await client.get(
        f"/v1/programs/{program}/segments/big-grocers/members", params={"cursor": page["next_cursor"]}
    )
    assert [m["member_ref"] for m in page["data"] + more.json()["data"]] == ["s05", "s07", "s09", "s11"]

    # s06 now buys mostly at 5411 (enters); s07 loses 400 of its 800 earned to a clawback (leaves)
    for _ in range(3):
        await earn(client, program, "s06", 1, purchase={"amount_minor": 1, "currency": "CNY", "mcc": "5411"})
    seven = await client.get(f"/v1/programs/{program}/members/s07/transactions")
    first_earn = seven.json()["data"][-1]["transaction_id"]
    r = await post(client, f"/v1/transactions/{first_earn}/reverse", {"points": 400, "reason": "fraud"})
    assert r.status_code == 201, r.text
    after = await _feed_end(client)
    refreshed = await client.post(f"/v1/programs/{program}/segments/big-grocers/refresh")
    assert refreshed.status_code == 200, refreshed.text
    assert (refreshed.json()["member_count"], refreshed.json()["entered"], refreshed.json()["left"]) == (
        4,
        1,
        1,
    )
    again = (await client.post(f"/v1/programs/{program}/segments/big-grocers/refresh")).json()
    assert (again["entered"], again["left"]) == (0, 0)
    events = (
        await client.get("/v1/events", params={"after": after, "type": ["segment.entered", "segment.left"]})
    ).json()
    seen = [
        (e["type"], e["data"]["member_ref"], e["data"]["segment"])
        for e in events["data"]
        if e["data"]["segment"] == "big-grocers"
    ]
    assert seen == [("segment.entered", "s06", "big-grocers"), ("segment.left", "s07", "big-grocers")]
    assert all(e["transaction"] is None for e in events["data"])

    r = await client.get(
        f"/v1/programs/{program}/segments/big-grocers/members", headers={"Accept": "text/csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert [row["member_ref"] for row in csv.DictReader(io.StringIO(r.text))] == ["s05", "s06", "s09", "s11"]
    listed = (await client.get(f"/v1/programs/{program}/segments")).json()["data"]
    assert [(s["code"], s["member_count"]) for s in listed] == [("big-grocers", 4)]

    reader = await make_key(ledger_app, ["ledger:read"])
    r = await client.get(f"/v1/programs/{program}/segments", headers={"Authorization": f"Bearer {reader}"})
    assert_problem(r, 403, "insufficient_scope")
    for bad in (
        {"all": []},
        {"any": [{"field": "zodiac", "op": "eq", "value": 1}]},
        {"all": [{"field": "balance", "op": "gte", "value": "many"}]},
    ):
        body = assert_problem(await _segment(client, program, "bad", bad), 422, "invalid_criteria")
        assert body["errors"][0]["field"].startswith("criteria")
    assert_problem(await client.get(f"/v1/programs/{program}/segments/nope"), 404, "segment_not_found")


async def test_a_segment_campaign_prices_members_in_the_segment(client: httpx.AsyncClient) -> None:
    program = await create_program(client)
    await earn(
        client, program, "lapsed", 10, occurred_at=(datetime.now(UTC) - timedelta(days=120)).isoformat()
    )
    await earn(client, program, "regular", 10)
    await _profiles_job(client, program)
    r = await _segment(
        client, program, "lapsed", {"all": [{"field": "days_since_last_earn", "op": "gte", "value": 90}]}
    )
    assert r.status_code == 201 and r.json()["member_count"] == 1, r.text
    rules = {
        "effective_from": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "base": {"points": 1, "per_amount_minor": 100},
        "rules": [{"name": "come back: 3x", "match": {"segment": "lapsed"}, "multiplier": "3"}],
    }
    assert (await client.post(f"/v1/programs/{program}/rules", json=rules)).status_code == 201
    purchase = {"amount_minor": 1000, "currency": "CNY"}
    dry = await client.post(
        f"/v1/programs/{program}/rules/evaluate", json={"member_ref": "lapsed", "purchase": purchase}
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["points"] == 30 and dry.json()["breakdown"]["matched_segments"] == ["lapsed"]
    lapsed = await post(
        client,
        "/v1/earn",
        {"program": program, "member_ref": "lapsed", "purchase": purchase, "reference": "x"},
    )
    regular = await post(
        client,
        "/v1/earn",
        {"program": program, "member_ref": "regular", "purchase": purchase, "reference": "x"},
    )
    assert (lapsed.json()["points"], regular.json()["points"]) == (30, 10)
