"""Settlement (DESIGN §8, "Must show" 1 of issue 14): a month of mixed activity across three partners and
two programs, through the API and a batch file, closed into statement lines that are checked against an
independent sum over postings and the terms in force; invariant 6; idempotent and concurrent runs; late
postings."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.conftest import create_program, earn, move, post
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.partners_helpers import create_partner, fund, put_terms
from tests.ledger.test_batches import upload, wait_done

FIGURES = ("points_issued", "points_issued_reversed", "points_accepted", "points_accepted_reversed")


def half_up(x: Fraction) -> int:
    return int(
        (Decimal(x.numerator) / Decimal(x.denominator) + Decimal("0.5")).to_integral_value(ROUND_FLOOR)
    )


@dataclass
class World:
    programs: dict[str, str]  # code -> time zone
    partners: list[str]
    start: datetime


async def _settle(client: httpx.AsyncClient, as_of: datetime) -> dict[str, Any]:
    r = await client.post("/v1/settlements", params={"as_of": as_of.isoformat()})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def _postings(app: Any, partner: str) -> list[Any]:
    """Every posting on the partner's two accounts, with its transaction (independent of the SQL that
    settles: plain joins of postings, accounts and transactions)."""
    async with app.state.db.driver() as conn:
        return list(
            await conn.fetch(
                """SELECT g.code AS program, a.kind, po.amount, t.id, t.type, t.kind AS txn_kind,
                          t.occurred_at, t.statement_line_id
                   FROM ledger.postings po JOIN ledger.accounts a ON a.id = po.account_id
                   JOIN ledger.programs g ON g.id = a.program_id
                   JOIN ledger.transactions t ON t.id = po.txn_id
                   WHERE a.member_ref IN ($1, $2)""",
                f"partner:{partner}:issued",
                f"partner:{partner}:accepted",
            )
        )


def _price_at(terms: list[dict[str, Any]], program: str, at: datetime, which: str) -> Fraction:
    versions = [
        t for t in terms if t["program"] == program and datetime.fromisoformat(t["effective_from"]) <= at
    ]
    v = max(versions, key=lambda t: t["effective_from"])
    return Fraction(v[which]["cash_minor"], v[which]["points"])


def _expected_line(rows: list[Any], terms: list[dict[str, Any]], program: str) -> dict[str, int]:
    """A line's figures from its postings: issued points are what left the issued account for earns,
    reversed what came back; accepted likewise on the accepted account; cash at the prices in force at
    each transaction, summed exactly and rounded half up once."""
    out = dict.fromkeys(FIGURES, 0)
    cash_from = cash_to = Fraction(0)
    for p in rows:
        if p["kind"] == "partner_issued":
            price = _price_at(terms, program, p["occurred_at"], "issue_price")
            name = "points_issued" if p["type"] == "earn" else "points_issued_reversed"
            out[name] += abs(p["amount"])
            cash_from += -p["amount"] * price
        else:
            price = _price_at(terms, program, p["occurred_at"], "accept_price")
            name = "points_accepted" if p["type"] in ("burn", "capture") else "points_accepted_reversed"
            out[name] += abs(p["amount"])
            cash_to += p["amount"] * price
    out["cash_due_from_partner_minor"] = half_up(cash_from)
    out["cash_due_to_partner_minor"] = half_up(cash_to)
    out["net_minor"] = out["cash_due_from_partner_minor"] - out["cash_due_to_partner_minor"]
    return out


async def _world(client: httpx.AsyncClient, ledger_app: Any) -> World:
    """Programs A (UTC) and B (Asia/Shanghai); a bank issuer (postpaid, daily in A, weekly in B, a price
    change half-way), an airline issuing and accepting (prepaid, daily) and a coffee chain accepting
    (daily); 26 days of earns, burns, holds, captures, reversals and a batch file."""
    now = datetime.now(UTC)
    start = now - timedelta(days=27)
    a = await create_program(client, timezone="UTC")
    b = await create_program(
        client, timezone="Asia/Shanghai", cash_value={"points": 500, "cash_minor": 100, "currency": "CNY"}
    )
    bank = await create_partner(client, ["issuer"], name="Bank")
    air = await create_partner(client, ["issuer", "acceptor"], name="Airline")
    cafe = await create_partner(client, ["acceptor"], name="Coffee")
    since = start.isoformat()
    await put_terms(client, bank, a, effective_from=since, issue_price={"points": 100, "cash_minor": 83})
    await put_terms(
        client, bank, a, effective_from=(start + timedelta(days=13, hours=5)).isoformat(),
        issue_price={"points": 300, "cash_minor": 251},
    )  # fmt: skip
    await put_terms(
        client, bank, b, effective_from=since, period="weekly", issue_price={"points": 7, "cash_minor": 3}
    )
    await put_terms(
        client, air, a, effective_from=since, funding="prepaid", accept_price={"points": 3, "cash_minor": 2}
    )
    await put_terms(client, air, b, effective_from=since, funding="prepaid")
    await put_terms(client, cafe, a, effective_from=since, accept_price={"points": 9, "cash_minor": 5})
    await put_terms(client, cafe, b, effective_from=since, accept_price={"points": 11, "cash_minor": 6})
    await fund(client, air, a, 10**7, 8 * 10**6)
    await fund(client, air, b, 10**7, 8 * 10**6)
    earned: list[dict[str, Any]] = []
    spent: list[dict[str, Any]] = []
    for day in range(26):
        for hour in (1, 9, 15, 23):
            at = start + timedelta(days=day, hours=hour, minutes=7 * day % 60)
            for program in (a, b):
                m = f"m{(day + hour) % 5}"
                issuer = bank if (day + hour) % 2 else air
                earned.append(
                    await earn(
                        client, program, m, 101 + day * 7 + hour, partner=issuer, occurred_at=at.isoformat()
                    )
                )
                if at > now - timedelta(days=29):
                    acceptor = cafe if hour % 3 else air
                    spent.append(
                        await move(
                            client,
                            "burn",
                            program,
                            m,
                            17 + day + hour,
                            partner=acceptor,
                            occurred_at=at.isoformat(),
                        )
                    )
    # A hold captured at the cafe, clawbacks and refunds (now: in the open period).
    h = await post(
        client,
        "/v1/holds",
        {"program": a, "member_ref": "m1", "points": 55, "reference": "h", "partner": cafe},
    )
    assert (await post(client, f"/v1/holds/{h.json()['id']}/capture", {"points": 50})).status_code == 201
    for t in earned[::9]:
        assert (
            await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 3, "reason": "claw"})
        ).status_code == 201
    for t in spent[::7]:
        assert (
            await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 5, "reason": "refund"})
        ).status_code == 201
    # A card-issuer file for the bank, in both programs.
    rows = ["external_id,program,member_ref,points,partner,occurred_at"]
    for i in range(60):
        at = start + timedelta(days=i % 25, hours=(i * 5) % 24)
        rows.append(f"W-{i},{a if i % 2 else b},f{i % 4},{40 + i},{bank},{at.isoformat()}")
    r = await upload(client, ("\n".join(rows) + "\n").encode())
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    assert done["posted"] == 60, done
    return World(programs={a: "UTC", b: "Asia/Shanghai"}, partners=[bank, air, cafe], start=start)


async def _check_lines(
    client: httpx.AsyncClient, ledger_app: Any, world: World, lines: list[dict[str, Any]]
) -> None:
    """Each line equals the independent sum of its postings; periods are whole days or weeks in the
    program's time zone; no transaction is on two lines."""
    by_line: dict[str, list[Any]] = defaultdict(list)
    for partner in world.partners:
        for p in await _postings(ledger_app, partner):
            if p["statement_line_id"] is not None:
                by_line[str(p["statement_line_id"])].append(p)
    terms_of = {p: (await client.get(f"/v1/partners/{p}/terms")).json()["data"] for p in world.partners}
    for line in lines:
        tz = ZoneInfo(world.programs[line["program"]])
        start = datetime.fromisoformat(line["period_start"]).astimezone(tz)
        end = datetime.fromisoformat(line["period_end"]).astimezone(tz)
        assert (start.hour, start.minute, end.hour, end.minute) == (0, 0, 0, 0), line
        assert (end - start).days in (1, 7) or end.date() == (start + timedelta(days=7)).date(), line
        expected = _expected_line(by_line[line["id"]], terms_of[line["partner"]], line["program"])
        assert {k: line[k] for k in expected} == expected, line


def _totals(lines: list[dict[str, Any]], partner: str, program: str) -> dict[str, int]:
    out = dict.fromkeys(FIGURES, 0)
    for line in lines:
        if line["partner"] == partner and line["program"] == program:
            for k in FIGURES:
                out[k] += line[k]
    return out


async def _check_invariant_6(client: httpx.AsyncClient, ledger_app: Any, world: World) -> None:
    """For each partner and program: closed statements plus the open position equal its accounts."""
    for partner in world.partners:
        closed = (await client.get(f"/v1/partners/{partner}/statements", params={"limit": 500})).json()
        assert closed["next_cursor"] is None
        position = (await client.get(f"/v1/partners/{partner}/position")).json()
        open_lines = [
            {**p, "partner": partner, "program": row["program"]}
            for row in position["programs"]
            for p in row["open_periods"]
        ]
        postings = await _postings(ledger_app, partner)
        for program in world.programs:
            total = _totals(closed["data"], partner, program)
            for k, v in _totals(open_lines, partner, program).items():
                total[k] += v
            issued = -sum(
                p["amount"] for p in postings if p["program"] == program and p["kind"] == "partner_issued"
            )
            accepted = sum(
                p["amount"] for p in postings if p["program"] == program and p["kind"] == "partner_accepted"
            )
            assert total["points_issued"] - total["points_issued_reversed"] == issued, (partner, program)
            assert total["points_accepted"] - total["points_accepted_reversed"] == accepted, (
                partner,
                program,
            )


async def test_a_month_of_partner_activity_settles_to_the_postings(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    world = await _world(client, ledger_app)
    first_as_of = datetime.now(UTC) - timedelta(days=4)
    first = await _settle(client, first_as_of)
    mine = [line for line in first["lines"] if line["partner"] in world.partners]
    # Daily periods from the first terms up to 4 days ago, in each program's zone; weekly for the bank in B.
    assert len({(x["partner"], x["program"], x["period_start"]) for x in mine}) == len(mine)
    assert {(x["partner"], x["program"]) for x in mine} == {
        (p, g) for p in world.partners for g in world.programs
    }
    assert all(datetime.fromisoformat(x["period_end"]) <= first_as_of for x in mine)
    assert sum(x["points_issued"] for x in mine) > 0 and sum(x["points_accepted"] for x in mine) > 0
    await _check_lines(client, ledger_app, world, mine)
    await _check_invariant_6(client, ledger_app, world)

    # Run again: nothing closes twice.
    again = await _settle(client, first_as_of)
    assert [x for x in again["lines"] if x["partner"] in world.partners] == []

    # A late batch row dated inside a closed period lands in the first open period.
    bank, program = world.partners[0], next(iter(world.programs))
    closed_before = (await client.get(f"/v1/partners/{bank}/statements", params={"limit": 500})).json()[
        "data"
    ]
    late_at = world.start + timedelta(days=5, hours=2)
    r = await upload(
        client,
        f"external_id,program,member_ref,points,partner,occurred_at\nLATE-1,{program},late,777,{bank},{late_at.isoformat()}\n".encode(),
    )
    assert (await wait_done(client, r.json()["id"], drive=ledger_app))["posted"] == 1
    second = await _settle(client, datetime.now(UTC))
    mine2 = [x for x in second["lines"] if x["partner"] in world.partners]
    await _check_lines(client, ledger_app, world, mine2)
    ours = sorted(
        (x for x in mine2 if x["partner"] == bank and x["program"] == program),
        key=lambda x: x["period_start"],
    )
    last_closed = max(x["period_end"] for x in closed_before if x["program"] == program)
    assert ours[0]["period_start"] == last_closed
    late_rows = [p for p in await _postings(ledger_app, bank) if p["occurred_at"] == late_at]
    assert [str(p["statement_line_id"]) for p in late_rows] == [ours[0]["id"]]
    closed_after = (await client.get(f"/v1/partners/{bank}/statements", params={"limit": 500})).json()["data"]
    assert [
        x for x in closed_after if x["id"] in {y["id"] for y in closed_before}
    ] == closed_before  # immutable
    await _check_invariant_6(client, ledger_app, world)
    for program in world.programs:
        await check_ledger_invariants(ledger_app.state.db, program)

    # The same lines as CSV.
    r = await client.get(f"/v1/settlements/{first['id']}", headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(r.text)))
    assert len(parsed) == len(first["lines"])
    assert [int(x["net_minor"]) for x in parsed] == [
        x["net_minor"]
        for x in sorted(first["lines"], key=lambda x: (x["partner"], x["program"], x["period_start"]))
    ]


async def test_two_settlements_at_once_close_each_period_once(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await create_program(client, timezone="Asia/Shanghai")
    partners = [await create_partner(client, ["issuer", "acceptor"]) for _ in range(3)]
    since = datetime.now(UTC) - timedelta(days=6)
    for p in partners:
        await put_terms(client, p, program, effective_from=since.isoformat())
        for d in range(6):
            await earn(
                client,
                program,
                "x",
                10 + d,
                partner=p,
                occurred_at=(since + timedelta(days=d, hours=3)).isoformat(),
            )
    as_of = datetime.now(UTC)
    runs = await asyncio.gather(
        *(client.post("/v1/settlements", params={"as_of": as_of.isoformat()}) for _ in range(4))
    )
    assert all(r.status_code == 201 for r in runs)
    lines = [x for r in runs for x in r.json()["lines"] if x["partner"] in partners]
    keys = [(x["partner"], x["period_start"]) for x in lines]
    assert len(keys) == len(set(keys)), "a period closed twice"
    for p in partners:
        closed = (await client.get(f"/v1/partners/{p}/statements")).json()["data"]
        assert sorted(x["id"] for x in closed) == sorted(x["id"] for x in lines if x["partner"] == p)
        assert sum(x["points_issued"] for x in closed) + sum(
            q["points_issued"]
            for q in (await client.get(f"/v1/partners/{p}/position")).json()["programs"][0]["open_periods"]
        ) == sum(10 + d for d in range(6))


async def test_settlement_as_of_in_the_future_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/settlements", params={"as_of": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    )
    assert r.status_code == 422 and r.json()["code"] == "as_of_in_future"
