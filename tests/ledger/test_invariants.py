"""DESIGN §7 invariants 1-4 after long random sequences of operations, against a model; with
pending points (DESIGN §10): some earns stay pending 7 days, and the clock moves on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import create_program, member, new_key, post
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.test_pending import travel

MEMBERS = ["m0", "m1", "m2"]
member_st = st.sampled_from(MEMBERS)
points_st = st.integers(min_value=1, max_value=400)

ops = st.one_of(
    st.tuples(st.just("earn"), member_st, points_st),
    st.tuples(st.just("burn"), member_st, points_st),
    st.tuples(st.just("hold"), member_st, points_st),
    st.tuples(st.just("capture"), st.integers(0, 50), st.integers(0, 400)),
    st.tuples(st.just("void"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(0, 400)),
    st.tuples(st.just("transfer"), st.tuples(member_st, member_st), points_st),
    st.tuples(st.just("replay"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("concurrent_burns"), member_st, st.integers(1, 60)),
    st.tuples(st.just("pending_earn"), member_st, points_st),
    st.tuples(st.just("travel"), st.integers(1, 5), st.just(0)),
)
PENDING_DAYS = 7


@dataclass
class Model:
    balance: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    holds: list[tuple[str, str, int]] = field(default_factory=list)  # id, member, points
    reversible: list[tuple[str, str, str, int]] = field(default_factory=list)  # id, type, member, remaining
    sent: list[tuple[str, dict, str, int]] = field(default_factory=list)  # path, body, key, status
    pending_lots: dict[str, list] = field(default_factory=dict)  # earn id: [member, days left, points]

    def pending(self, m: str) -> int:
        return sum(lot[2] for lot in self.pending_lots.values() if lot[0] == m and lot[1] > 0)

    def available(self, m: str) -> int:
        return self.balance[m] - self.held[m] - self.pending(m)


async def _apply(client: httpx.AsyncClient, db, program: str, model: Model, op) -> None:
    name, a, b = op

    async def send(path: str, body: dict) -> httpx.Response:
        key = new_key()
        r = await post(client, path, body, key=key)
        assert r.status_code < 500, r.text
        model.sent.append((path, body, key, r.status_code))
        return r

    if name in ("earn", "pending_earn"):
        body = {"program": program, "member_ref": a, "points": b, "reference": "e"}
        if name == "earn":  # past its pending days already: spendable at once
            body["occurred_at"] = (datetime.now(UTC) - timedelta(days=PENDING_DAYS + 1)).isoformat()
        r = await send("/v1/earn", body)
        assert r.status_code == 201
        model.balance[a] += b
        model.reversible.append((r.json()["id"], "earn", a, b))
        if name == "pending_earn":
            model.pending_lots[r.json()["id"]] = [a, PENDING_DAYS, b]
        assert r.json()["balance_after"]["available"] == model.available(a)
    elif name == "travel":
        await travel(db, program, a)
        for lot in model.pending_lots.values():
            lot[1] -= a
    elif name == "burn":
        r = await send("/v1/burn", {"program": program, "member_ref": a, "points": b, "reference": "b"})
        assert r.status_code == (201 if model.available(a) >= b else 422)
        if r.status_code == 201:
            model.balance[a] -= b
            model.reversible.append((r.json()["id"], "burn", a, b))
    elif name == "hold":
        r = await send("/v1/holds", {"program": program, "member_ref": a, "points": b, "reference": "h"})
        assert r.status_code == (201 if model.available(a) >= b else 422)
        if r.status_code == 201:
            model.held[a] += b
            model.holds.append((r.json()["id"], a, b))
    elif name in ("capture", "void") and model.holds:
        hold_id, m, pts = model.holds.pop(a % len(model.holds))
        if name == "void":
            r = await send(f"/v1/holds/{hold_id}/void", {})
            assert r.status_code == 200
            model.held[m] -= pts
        else:
            take = b % pts + 1
            r = await send(f"/v1/holds/{hold_id}/capture", {"points": take})
            assert r.status_code == 201, r.text
            model.held[m] -= pts
            model.balance[m] -= take
            model.reversible.append((r.json()["id"], "capture", m, take))
    elif name == "reverse" and model.reversible:
        i = a % len(model.reversible)
        tid, kind, m, remaining = model.reversible[i]
        want = b % (remaining + 2) + 1  # sometimes more than what is left
        r = await send(f"/v1/transactions/{tid}/reverse", {"points": want, "reason": "r"})
        lot = model.pending_lots.get(tid)
        own_pending = min(lot[2], want) if lot is not None and lot[1] > 0 else 0
        if want > remaining or remaining == 0:
            assert r.status_code == 422 and r.json()["code"] == "reversal_exceeds_original"
        elif kind == "earn" and model.available(m) < want - own_pending:  # within_balance
            assert r.status_code == 422 and r.json()["code"] == "insufficient_points"
        else:
            assert r.status_code == 201, r.text
            model.balance[m] += -want if kind == "earn" else want
            model.reversible[i] = (tid, kind, m, remaining - want)
            if lot is not None:
                lot[2] -= min(lot[2], want)  # the clawback takes its own lot first
            assert r.json()["balance_after"]["available"] == model.available(m)
    elif name == "transfer":
        src, dst = a
        if src == dst:
            return
        r = await send(
            "/v1/transfers", {"program": program, "from_member_ref": src, "to_member_ref": dst, "points": b}
        )
        assert r.status_code == (201 if model.available(src) >= b else 422)
        if r.status_code == 201:
            model.balance[src] -= b
            model.balance[dst] += b
    elif name == "replay" and model.sent:
        path, body, key, status = model.sent[a % len(model.sent)]
        r = await post(client, path, body, key=key)
        assert r.status_code == status and r.headers.get("Idempotent-Replayed") == "true"
    elif name == "concurrent_burns":
        body = {"program": program, "member_ref": a, "points": b, "reference": "c"}
        responses = await asyncio.gather(*(post(client, "/v1/burn", body) for _ in range(8)))
        ok = sum(r.status_code == 201 for r in responses)
        assert ok == min(8, max(model.available(a), 0) // b)
        model.balance[a] -= ok * b
        for r in responses:
            if r.status_code == 201:
                model.reversible.append((r.json()["id"], "burn", a, b))


async def check_flows(db, program: str) -> None:
    """4: earned = spent + expired + reversed + outstanding (refunds lower spent)."""
    async with db.driver() as conn:
        row = await conn.fetchrow(
            """SELECT coalesce(sum(t.points) FILTER (WHERE t.type = 'earn'), 0) AS earned,
                      coalesce(sum(t.points) FILTER (WHERE t.type IN ('burn', 'capture')), 0)
                      - coalesce(sum(t.points) FILTER (WHERE t.type = 'reversal' AND t.kind <> 'earn'), 0)
                          AS spent,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'expiry'), 0) AS expired,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'reversal' AND t.kind = 'earn'), 0)
                          AS reversed,
                      (SELECT coalesce(sum(a.balance), 0) FROM ledger.accounts a
                       WHERE a.program_id = p.id AND a.kind = 'member') AS outstanding
               FROM ledger.programs p LEFT JOIN ledger.transactions t ON t.program_id = p.id
               WHERE p.code = $1 GROUP BY p.id""",
            program,
        )
    assert row["earned"] == row["spent"] + row["expired"] + row["reversed"] + row["outstanding"], dict(row)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequence=st.lists(ops, min_size=40, max_size=120))
async def test_random_sequences_keep_the_invariants(client: httpx.AsyncClient, ledger_app, sequence) -> None:
    program = await create_program(client, pending_days=PENDING_DAYS)
    model = Model()
    for op in sequence:
        await _apply(client, ledger_app.state.db, program, model, op)
    for m in MEMBERS:
        view = await member(client, program, m)
        assert (view["balance"], view["held"]) == (model.balance[m], model.held[m]), (m, view)
        assert (view["pending"], view["available"]) == (model.pending(m), model.available(m)), (m, view)
        assert view["available"] >= 0
    await check_ledger_invariants(ledger_app.state.db, program)
    await check_flows(ledger_app.state.db, program)
