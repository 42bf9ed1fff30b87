"""Finance under generated histories (issue 14 "Must show" 2): for any mix of earns, burns, clawbacks,
refunds, adjustments and expiry runs, booked over two months around Shanghai's day boundaries, every
roll-forward row closes and the last closing is the outstanding points; aging buckets sum to the
outstanding points; cohort redemption curves never fall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_service.finance.service import add_months
from tests.conftest import create_program, new_key, post
from tests.ledger.test_finance import _assert_closes, _backdate, _balances, _ok

MEMBERS = ("a", "b", "c")
member_st = st.sampled_from(MEMBERS)
# Days back and an hour near 16:00 UTC (midnight in Shanghai), so bookings straddle local days.
when_st = st.tuples(st.integers(0, 55), st.sampled_from([0, 15, 16, 23]))

ops = st.one_of(
    st.tuples(st.just("earn"), member_st, st.integers(1, 500), when_st),
    st.tuples(st.just("burn"), member_st, st.integers(1, 300), when_st),
    st.tuples(st.just("reverse"), st.integers(0, 40), st.integers(1, 200), when_st),
    st.tuples(st.just("adjust"), member_st, st.integers(-50, 80), when_st),
    st.tuples(st.just("expire"), st.just(""), st.just(0), when_st),
)


def _at(now: datetime, when: tuple[int, int]) -> datetime:
    days, hour = when
    day = (now - timedelta(days=days)).date()
    return min(
        datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour), now - timedelta(minutes=1)
    )


async def _apply(
    client: httpx.AsyncClient, app: Any, program: str, done: list[tuple[str, str]], op: Any
) -> None:
    name, a, b, when = op
    now = datetime.now(UTC)
    at = _at(now, when)
    if name == "earn":
        # Earned 20 days before booking: a rolling month has run out for some, the expiry runs take them.
        occurred = (at - timedelta(days=20)).isoformat()
        body = {"program": program, "member_ref": a, "points": b, "reference": "e", "occurred_at": occurred}
        r = await post(client, "/v1/earn", body)
        assert r.status_code == 201, r.text
        await _backdate(app, [r.json()["id"]], at)
        done.append((r.json()["id"], "earn"))
    elif name == "burn":
        r = await post(
            client, "/v1/burn", {"program": program, "member_ref": a, "points": b, "reference": "b"}
        )
        assert r.status_code in (201, 422), r.text
        if r.status_code == 201:
            await _backdate(app, [r.json()["id"]], at)
            done.append((r.json()["id"], "burn"))
    elif name == "reverse" and done:
        tid, _ = done[a % len(done)]
        r = await post(client, f"/v1/transactions/{tid}/reverse", {"points": b, "reason": "r"})
        assert r.status_code in (201, 422), r.text
    elif name == "adjust" and b != 0:
        r = await post(
            client, "/v1/adjustments", {"program": program, "member_ref": a, "points": b, "reason": "ops"}
        )
        assert r.status_code in (201, 422), r.text
        if r.status_code == 201:
            await _backdate(app, [r.json()["id"]], at)
    elif name == "expire":
        r = await client.post("/v1/jobs/expire", params={"as_of": now.isoformat(), "program": program})
        assert r.status_code == 200, r.text


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(ops, min_size=10, max_size=45))
async def test_finance_reports_hold_for_any_history(
    client: httpx.AsyncClient, ledger_app: Any, history: Any
) -> None:
    program = await create_program(
        client,
        timezone="Asia/Shanghai",
        expiry={"policy": "rolling", "months": 1},
        cash_value={"points": 7, "cash_minor": 3, "currency": "CNY"},
    )
    done: list[tuple[str, str]] = []
    for op in history:
        await _apply(client, ledger_app, program, done, op)
    await client.post("/v1/jobs/expire", params={"program": program}, headers={"Idempotency-Key": new_key()})
    outstanding = await _balances(ledger_app, program)
    today = datetime.now(UTC).date()
    for period, start in (("day", today - timedelta(days=60)), ("month", add_months(today, -3))):
        body = await _ok(client, f"/v1/programs/{program}/liability", period=period, **{"from": str(start)})
        rows = body["rows"]
        _assert_closes(rows)
        assert rows[0]["opening"] == 0
        assert rows[-1]["closing"] == body["outstanding"] == outstanding
    aging = await _ok(client, f"/v1/programs/{program}/liability/aging")
    assert (
        sum(b["points"] for b in aging["buckets"]) + aging["negative_balances"]
        == aging["outstanding"]
        == outstanding
    )
    cohorts = (await _ok(client, f"/v1/programs/{program}/cohorts", **{"from": str(add_months(today, -3))}))[
        "cohorts"
    ]
    for c in cohorts:
        curve = [p["redeemed"] for p in c["curve"]]
        assert curve == sorted(curve) and curve[0] >= 0 and curve[-1] <= c["redeemed"] <= c["issued"], c
        parts = ("redeemed", "reversed", "transferred", "adjusted", "expired", "outstanding")
        assert c["issued"] == sum(c[p] for p in parts), c
        assert c["expired"] >= 0
