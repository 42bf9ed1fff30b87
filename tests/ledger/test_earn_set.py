"""Set-based earns in group commit (ledger.earn_set): a coalesced batch must leave exactly the state,
and give exactly the answers, that the same requests applied one at a time do."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
from prometheus_client import REGISTRY

from ledger_service.postings.engine import Outcome, PostingEngine
from services.auth import Principal
from services.errors import DomainError
from tests.conftest import create_program, earn, make_key, new_key, post
from tests.harness import wait_for_lock_wait
from tests.ledger.invariants import check_ledger_invariants

TIERS = [{"code": "silver", "min_points": 1000}, {"code": "gold", "min_points": 5000}]
VOLATILE = {"id", "created_at", "occurred_at", "program"}  # occurred_at: now() unless given


async def _setup(client: httpx.AsyncClient) -> str:
    program = await create_program(client, tiers=TIERS, expiry={"policy": "rolling", "months": 12})
    await earn(client, program, "neg", 300)
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "neg", "points": 100, "reference": "b"}
    )
    assert r.status_code == 201, r.text
    await earn(client, program, "old", 900)
    return program


def _requests(program: str, keys: list[str]) -> list[tuple[str, dict[str, Any], str]]:
    now = datetime.now(UTC).replace(microsecond=0)
    at = [(now - timedelta(days=d)).isoformat() for d in range(5)]
    earn_ = "earn"
    reqs: list[tuple[str, dict[str, Any], str]] = []

    def add(op: str, key: str, **args: Any) -> None:
        reqs.append((op, {"program": program, "reference": "r", **args}, key))

    add(earn_, keys[0], member_ref="neg", points=150, occurred_at=at[1])
    add(earn_, keys[1], member_ref="neg", points=250, occurred_at=at[2])
    add(earn_, keys[2], member_ref="neg", points=10, kind="bonus", metadata={"why": "welcome"})
    add(earn_, keys[3], member_ref="old", points=200, occurred_at=at[3])  # crosses silver
    add(earn_, keys[4], member_ref="old", points=50, occurred_at=at[0], clearing="merchant")
    add(earn_, keys[5], member_ref="new1", points=7, occurred_at=at[4], purchase={"amount_minor": 700,
        "currency": "CNY", "merchant_id": "shop-1"})  # fmt: skip
    add(earn_, keys[5], member_ref="new1", points=7, occurred_at=at[4], purchase={"amount_minor": 700,
        "currency": "CNY", "merchant_id": "shop-1"})  # fmt: skip  # same key again: one effect
    add(earn_, keys[6], member_ref="new2", points=5_000, occurred_at=at[0])  # silver and gold at once
    add("burn", keys[7], member_ref="spender", points=1)  # refused: nothing to burn
    add(earn_, keys[8], member_ref="x", points=1, program="NOPE_SET")
    return reqs


def _shape(result: Outcome | BaseException) -> Any:
    if isinstance(result, DomainError):
        return ("error", result.status, result.code)
    assert isinstance(result, Outcome), result
    body = {k: v for k, v in result.json().items() if k not in VOLATILE}
    return (result.status, result.replayed, body)


MEMBER = " JOIN ledger.accounts a ON a.id = {}.account_id JOIN ledger.programs p ON p.id = a.program_id"


async def _state(db: Any, program: str) -> Any:
    queries = (
        "SELECT a.member_ref, a.balance, a.held, a.lifetime_earned, a.tier FROM ledger.accounts a"
        " JOIN ledger.programs p ON p.id = a.program_id WHERE p.code = $1 AND a.kind = 'member' ORDER BY 1",
        "SELECT a.member_ref, l.points, l.remaining, l.expires_at - t.occurred_at FROM ledger.lots l"
        " JOIN ledger.transactions t ON t.id = l.txn_id" + MEMBER.format("l") + " WHERE p.code = $1"
        " ORDER BY 1, 2, 3",
        "SELECT a.member_ref, b.month, b.points FROM ledger.tier_buckets b"
        + MEMBER.format("b")
        + " WHERE p.code = $1 ORDER BY 1, 2",
        "SELECT a.member_ref, max(h.to_tier) FROM ledger.tier_history h"
        + MEMBER.format("h")
        + " WHERE p.code = $1 GROUP BY 1 ORDER BY 1",
        "SELECT a.kind, sum(o.amount) FROM ledger.postings o"
        + MEMBER.format("o")
        + " WHERE p.code = $1 GROUP BY 1 ORDER BY 1",
    )
    async with db.driver() as conn:
        return [[tuple(r) for r in await conn.fetch(q, program)] for q in queries]


async def test_a_coalesced_batch_equals_one_at_a_time(client: httpx.AsyncClient, ledger_app: Any) -> None:
    db = ledger_app.state.db
    principal: Principal | None = await ledger_app.state.keys.lookup(
        await make_key(ledger_app, ["ledger:admin"])
    )
    assert principal is not None
    batched_engine = PostingEngine(db, coalesce=True, window_s=0.05, max_batch=48)
    single_engine = PostingEngine(db, coalesce=False)

    p_batch, p_single = await _setup(client), await _setup(client)
    keys = [new_key() for _ in range(9)]
    batch_reqs, single_reqs = _requests(p_batch, keys), _requests(p_single, [k + "-s" for k in keys])
    # The coalescer applies a batch sorted by (program, member), stable: one at a time in that order.
    order = sorted(
        range(len(batch_reqs)), key=lambda n: (batch_reqs[n][1]["program"], batch_reqs[n][1]["member_ref"])
    )

    before = REGISTRY.get_sample_value("jifen_ledger_batch_size_count") or 0.0
    batched = await asyncio.gather(
        *(batched_engine.execute(op, args, principal, key) for op, args, key in batch_reqs),
        return_exceptions=True,
    )
    assert (REGISTRY.get_sample_value("jifen_ledger_batch_size_count") or 0.0) - before == 1  # one batch
    single: list[Outcome | BaseException] = [None] * len(single_reqs)  # type: ignore[list-item]
    for n in order:
        op, args, key = single_reqs[n]
        try:
            single[n] = await single_engine.execute(op, args, principal, key)
        except DomainError as exc:
            single[n] = exc

    for n in range(len(batch_reqs)):
        assert _shape(batched[n]) == _shape(single[n]), batch_reqs[n]
    assert [_shape(b)[0] for b in batched].count(201) == 8
    assert _shape(batched[6])[1] is True  # the repeated key is a replay
    assert await _state(db, p_batch) == await _state(db, p_single)
    await check_ledger_invariants(db, p_batch)

    # A retry of the whole batch replays every applied request and changes nothing.
    state = await _state(db, p_batch)
    again = await asyncio.gather(
        *(batched_engine.execute(op, args, principal, key) for op, args, key in batch_reqs),
        return_exceptions=True,
    )
    for first, second in zip(batched, again, strict=True):
        if isinstance(first, Outcome):
            assert isinstance(second, Outcome) and second.replayed and second.body == first.body
    assert await _state(db, p_batch) == state


async def test_key_scoped_to_other_programs_is_refused_in_a_batch(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program, other = await create_program(client), await create_program(client)
    principal = await ledger_app.state.keys.lookup(
        await make_key(ledger_app, ["ledger:earn"], programs=[other])
    )
    engine = PostingEngine(ledger_app.state.db, coalesce=True, window_s=0.05, max_batch=48)
    results = await asyncio.gather(
        *(
            engine.execute(
                "earn", {"program": p, "member_ref": "m", "points": 3, "reference": "r"}, principal, new_key()
            )
            for p in (program, other, other)
        ),
        return_exceptions=True,
    )
    assert isinstance(results[0], DomainError) and results[0].code == "program_forbidden"
    assert [r.json()["balance_after"]["balance"] for r in results[1:] if isinstance(r, Outcome)] == [3, 6]


async def test_mixed_batches_crossing_members_do_not_deadlock(
    client: httpx.AsyncClient, ledger_app: Any, caplog: Any
) -> None:
    """Batch A earns for x and burns from y while batch B earns for y and burns from x: without
    locking every member of a mixed batch by id first, the two cross and one fails as a whole."""
    program = await create_program(client)
    members = [f"c{i}" for i in range(8)]
    for m in members:
        await earn(client, program, m, 1_000_000)
    principal = await ledger_app.state.keys.lookup(await make_key(ledger_app, ["ledger:admin"]))
    engines = [
        PostingEngine(ledger_app.state.db, coalesce=True, window_s=0.01, max_batch=48) for _ in range(2)
    ]

    def call(engine: PostingEngine, op: str, member_ref: str) -> Any:
        args = {"program": program, "member_ref": member_ref, "points": 1, "reference": "r"}
        return engine.execute(op, args, principal, new_key())

    caplog.set_level("WARNING", logger="jifen.ledger.coalescer")
    for _ in range(30):
        calls = []
        for n in range(0, len(members), 2):
            x, y = members[n], members[n + 1]
            calls += [call(engines[0], "earn", x), call(engines[0], "burn", y)]
            calls += [call(engines[1], "earn", y), call(engines[1], "burn", x)]
        results = await asyncio.gather(*calls)
        assert all(r.status == 201 for r in results)
    failed = [r for r in caplog.records if "failed as a whole" in r.getMessage()]
    assert not failed, [r.__dict__.get("error") for r in failed][:3]
    await check_ledger_invariants(ledger_app.state.db, program)


_LOCK_MEMBER = (
    "SELECT 1 FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id"
    " WHERE p.code = $1 AND a.member_ref = '{}' FOR UPDATE OF a"
)
_BATCH = "SELECT i, status, body, replayed FROM ledger.execute_batch($1::jsonb)"


def _req(k: int, prog: str, member: str, points: int) -> dict[str, Any]:
    a = {"program": prog, "member_ref": member, "points": points, "reference": "r", "kind": "purchase"}
    key = new_key()
    h = hashlib.sha256(b"earn\n" + orjson.dumps(a, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"k": k, "key": key, "h": h, "op": "earn", "a": a, "p": None, "s": ["ledger:earn"]}


async def test_earns_left_to_execute_take_the_up_front_locks(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """An earn priced at 0 points goes through ledger.execute and locks its member after earn_set:
    unless the batch first locks all its members by id, two batches can cross (found in review).
    Batch 1 earns for B and has a 0-point earn for A; batch 2 the other way round. With A and B held
    by other transactions, each batch must wait for the lower-id member first, so releasing B then A
    cannot leave batch 1 holding B while batch 2 holds A. Every wait is observed in pg_locks
    (pg_blocking_pids), so the interleaving really happens or the test fails."""
    db = ledger_app.state.db
    prog = await create_program(client)
    await earn(client, prog, "A", 1)
    await earn(client, prog, "B", 1)
    async with db.driver() as conn:
        first = await conn.fetchval(
            "SELECT a.member_ref FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id"
            " WHERE p.code = $1 AND a.kind = 'member' ORDER BY a.id LIMIT 1",
            prog,
        )
    assert first == "A"
    principal = await ledger_app.state.keys.lookup(await make_key(ledger_app, ["ledger:earn"]))
    k = principal.key_id
    # Two pure-earn batches (no up-front locks of mixed batches): each has a plain earn (earn_set) and
    # a 0-point priced earn (ledger.execute -> lock_member) on the other member.
    b1 = orjson.dumps([_req(k, prog, "A", 0), _req(k, prog, "B", 10)]).decode()
    b2 = orjson.dumps([_req(k, prog, "A", 10), _req(k, prog, "B", 0)]).decode()
    async with (
        db.driver() as la,
        db.driver() as lb,
        db.driver() as c1,
        db.driver() as c2,
        db.driver() as watch,
    ):
        pa, pb, p1, p2 = (c.get_server_pid() for c in (la, lb, c1, c2))
        ta, tb = la.transaction(), lb.transaction()
        await ta.start()
        await tb.start()
        await la.execute(_LOCK_MEMBER.format("A"), prog)
        await lb.execute(_LOCK_MEMBER.format("B"), prog)
        f1 = asyncio.create_task(c1.fetch(_BATCH, b1))
        waits = await wait_for_lock_wait(watch, waiter=p1)
        assert waits[p1] == [pa], f"batch 1 must wait for A (lower id) first, not B: {waits}"
        f2 = asyncio.create_task(c2.fetch(_BATCH, b2))
        waits = await wait_for_lock_wait(watch, waiter=p2)
        assert set(waits[p2]) <= {pa, p1}, f"batch 2 must queue for A: {waits}"
        await tb.rollback()  # B is free: a batch that had locked B before A would now take it
        waits = await wait_for_lock_wait(watch, waiter=p1, holder=pa)
        assert pb not in waits.get(p2, []), waits
        await ta.rollback()  # A is free: batch 1 takes A then B; batch 2 follows
        res = await asyncio.wait_for(asyncio.gather(f1, f2, return_exceptions=True), timeout=30)
    assert not any(isinstance(r, asyncpg.exceptions.DeadlockDetectedError) for r in res), res
    assert not any(isinstance(r, BaseException) for r in res), res
    assert [[row["status"] for row in rows] for rows in res] == [[201, 201], [201, 201]], res
    async with db.driver() as conn:
        balances = await conn.fetch(
            "SELECT a.member_ref, a.balance FROM ledger.accounts a JOIN ledger.programs p"
            " ON p.id = a.program_id WHERE p.code = $1 AND a.kind = 'member' ORDER BY 1",
            prog,
        )
    assert [tuple(r) for r in balances] == [("A", 11), ("B", 11)]
