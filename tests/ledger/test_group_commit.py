"""Group commit (issue 7): requests coalesced into shared database transactions keep their own
results, idempotency and errors; a process killed mid-batch loses nothing and applies nothing twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY

from ledger_service.postings.engine import PostingEngine
from services.errors import DomainError
from tests.conftest import create_program, earn, make_key, member, new_key, post
from tests.harness import ServiceProcess, api_client
from tests.ledger.invariants import check_ledger_invariants


@pytest.fixture
async def slow_engine(ledger_app) -> PostingEngine:
    """An engine whose window is wide enough that concurrent calls surely share a batch."""
    return PostingEngine(ledger_app.state.db, coalesce=True, window_s=0.05, max_batch=48)


async def _principal(ledger_app):
    secret = await make_key(ledger_app, ["ledger:admin"])
    return await ledger_app.state.keys.lookup(secret)


def _batches() -> float:
    return REGISTRY.get_sample_value("jifen_ledger_batch_size_count") or 0.0


async def test_requests_share_a_transaction_and_keep_their_own_results(
    client, ledger_app, slow_engine
) -> None:
    program = await create_program(client)
    principal = await _principal(ledger_app)
    before = _batches()
    outcomes = await asyncio.gather(
        *(
            slow_engine.execute(
                "earn",
                {"program": program, "member_ref": f"g{i}", "points": i + 1, "reference": "r"},
                principal,
                new_key(),
            )
            for i in range(20)
        )
    )
    bodies = [o.json() for o in outcomes]
    assert [b["points"] for b in bodies] == list(range(1, 21))
    assert [b["balance_after"]["balance"] for b in bodies] == list(range(1, 21))
    assert 0 < _batches() - before < 20  # coalesced into fewer database transactions
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_same_key_twice_in_one_batch_applies_once(client, ledger_app, slow_engine) -> None:
    program = await create_program(client)
    principal = await _principal(ledger_app)
    key = new_key()
    args = {"program": program, "member_ref": "dup", "points": 5, "reference": "r"}
    outcomes = await asyncio.gather(
        *(slow_engine.execute("earn", args, principal, key) for _ in range(10)), return_exceptions=True
    )
    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len({o.json()["id"] for o in applied}) == 1
    assert sum(1 for o in applied if not o.replayed) == 1
    assert all(
        isinstance(o, DomainError) and o.code == "idempotency_key_in_use"
        for o in outcomes
        if isinstance(o, BaseException)
    )
    assert (await member(client, program, "dup"))["balance"] == 5


async def test_a_failing_request_does_not_fail_its_neighbours(client, ledger_app, slow_engine) -> None:
    program = await create_program(client)
    await earn(client, program, "poor", 100)
    principal = await _principal(ledger_app)
    calls = [
        slow_engine.execute(
            "burn",
            {"program": program, "member_ref": "poor", "points": 30, "reference": "b"},
            principal,
            new_key(),
        )
        for _ in range(5)
    ]
    calls += [
        slow_engine.execute(
            "earn",
            {"program": program, "member_ref": f"n{i}", "points": 7, "reference": "e"},
            principal,
            new_key(),
        )
        for i in range(5)
    ]
    calls.append(
        slow_engine.execute(
            "earn",
            {"program": "NOPE_XYZ", "member_ref": "x", "points": 1, "reference": "e"},
            principal,
            new_key(),
        )
    )
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    burns, earns, unknown = outcomes[:5], outcomes[5:10], outcomes[10]
    assert sum(not isinstance(b, BaseException) for b in burns) == 3
    assert all(
        isinstance(b, DomainError) and b.code == "insufficient_points"
        for b in burns
        if isinstance(b, BaseException)
    )
    assert all(not isinstance(e, BaseException) for e in earns)
    assert isinstance(unknown, DomainError) and unknown.code == "program_not_found"
    assert (await member(client, program, "poor"))["balance"] == 10
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_killed_mid_batch_every_request_applies_exactly_once(
    database_url, client, ledger_app, admin_key
) -> None:
    program = await create_program(client)
    env = {"JIFEN_LEDGER_COALESCE_WINDOW_MS": "2"}
    ledger = ServiceProcess("ledger", database_url, env=env).start()
    requests = [
        (new_key(), {"program": program, "member_ref": f"k{i % 50}", "points": 1 + i % 9, "reference": "r"})
        for i in range(600)
    ]
    results: dict[str, int | str] = {}
    try:
        async with api_client(
            ledger.url, admin_key, timeout=10, limits=httpx.Limits(max_connections=64)
        ) as http:
            sem = asyncio.Semaphore(64)

            async def send(key: str, body: dict) -> None:
                async with sem:
                    try:
                        r = await http.post("/v1/earn", json=body, headers={"Idempotency-Key": key})
                        results[key] = r.status_code
                    except httpx.HTTPError as exc:
                        results[key] = type(exc).__name__

            async def killer() -> None:
                while sum(1 for v in results.values() if v == 201) < 150:
                    await asyncio.sleep(0.005)
                ledger.kill()

            await asyncio.gather(killer(), *(send(k, b) for k, b in requests))
    finally:
        ledger.kill()
    assert any(v == 201 for v in results.values())
    assert set(results.values()) <= {
        201,
        "ConnectError",
        "ReadError",
        "RemoteProtocolError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteError",
    }, set(results.values())
    failed = [k for k, v in results.items() if v != 201]
    assert failed, "the kill came too late to interrupt anything"
    # the clients retry with the same keys: each request ends applied exactly once
    for key, body in requests:
        r = await client.post("/v1/earn", json=body, headers={"Idempotency-Key": key})
        assert r.status_code == 201, r.text
        if results[key] == 201:
            assert r.headers.get("Idempotent-Replayed") == "true"
    expected: dict[str, int] = {}
    for _, body in requests:
        expected[body["member_ref"]] = expected.get(body["member_ref"], 0) + body["points"]
    for who, points in expected.items():
        assert (await member(client, program, who))["balance"] == points
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_captures_and_reversals_in_crossing_batches_do_not_deadlock(
    client: httpx.AsyncClient, ledger_app, caplog
) -> None:
    """Captures, voids and reversals join batches: a batch locks documents, then members, each by id,
    so batches crossing members and documents never deadlock and each request applies once."""
    program = await create_program(client)
    members = [f"d{i}" for i in range(6)]
    earns = {m: await earn(client, program, m, 1_000_000) for m in members}
    principal = await _principal(ledger_app)
    engines = [
        PostingEngine(ledger_app.state.db, coalesce=True, window_s=0.01, max_batch=48) for _ in range(2)
    ]

    def run(engine: PostingEngine, op: str, args: dict) -> object:
        return engine.execute(op, {"program": program, **args} if "hold_id" not in args and "transaction_id"
                              not in args else args, principal, new_key())  # fmt: skip

    caplog.set_level("WARNING", logger="jifen.ledger.coalescer")
    for _ in range(15):
        holds = {}
        for m in members:
            r = await post(
                client, "/v1/holds", {"program": program, "member_ref": m, "points": 5, "reference": "h"}
            )
            assert r.status_code == 201, r.text
            holds[m] = r.json()["id"]
        calls = []
        for n in range(0, len(members), 2):
            x, y = members[n], members[n + 1]
            for engine, (a, b) in ((engines[0], (x, y)), (engines[1], (y, x))):
                calls += [
                    run(engine, "capture", {"hold_id": holds[a], "points": 3}),
                    run(engine, "reverse", {"transaction_id": earns[b]["id"], "points": 1, "reason": "r"}),
                    run(engine, "earn", {"member_ref": b, "points": 2, "reference": "e"}),
                    run(engine, "burn", {"member_ref": a, "points": 1, "reference": "b"}),
                ]
        results = await asyncio.gather(*calls)
        assert all(r.status == 201 for r in results)
    failed = [r for r in caplog.records if "failed as a whole" in r.getMessage()]
    assert not failed, [r.__dict__.get("error") for r in failed][:3]
    for m in members:  # 15 rounds: +1,000,000 -3 captured -1 clawed back +2 earned -1 burned
        assert (await member(client, program, m))["balance"] == 1_000_000 + 15 * (-3 - 1 + 2 - 1)
    await check_ledger_invariants(ledger_app.state.db, program)
