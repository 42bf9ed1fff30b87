"""The shared saga runner (services/saga.py) on a real PostgreSQL, with a saga of its own: a table in a
throwaway schema and one step that charges through a scripted ledger (an httpx transport standing in
for the ledger's HTTP API; the database is real). What conversions and redemptions rely on: refusals
passed through and replayed, an unreachable ledger retried with backoff and resumed by recovery, replays
while a driver holds the saga, two drivers applying a step once, and the purge keeping pending keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import asyncpg
import httpx
import pytest

from services.db import Database
from services.errors import LEDGER_RETRY_AFTER_S, ledger_refusal
from services.idempotency import IDEMPOTENCY_TABLE_DDL, PENDING, IdempotencyInUse, purge_expired_keys
from services.ledger_client import LedgerClient
from services.saga import (
    Answer,
    LedgerCall,
    Operation,
    Outcome,
    Retry,
    SagaDefinition,
    SagaRunner,
    SagaTable,
    SagaTiming,
    Step,
    Transition,
)

SCHEMA = "sagatest"
DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.items (
    id uuid PRIMARY KEY,
    status text NOT NULL,
    points bigint NOT NULL,
    txn_id uuid,
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    api_key_id bigint NOT NULL,
    idempotency_key text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE {SCHEMA}.item_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id uuid NOT NULL REFERENCES {SCHEMA}.items (id),
    status text NOT NULL,
    event text NOT NULL,
    detail jsonb
);
{IDEMPOTENCY_TABLE_DDL.format(schema=SCHEMA)}
"""

Reply = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Ledger:
    """A scripted ledger: `answer` says what each call gets; `calls` counts them."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer: Reply = self.posted

    async def posted(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201, json={"id": str(uuid.uuid5(uuid.NAMESPACE_URL, request.headers["Idempotency-Key"]))}
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await self.answer(request)


def refusing(status: int, code: str) -> Reply:
    async def reply(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"status": status, "code": code, "detail": f"refused: {code}"})

    return reply


async def down(_: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"code": "unavailable"})


async def _charged(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition | Retry:
    return Transition("done", {"txn": str(outcome.txn_id)}, values={"txn_id": outcome.txn_id}, answer=_final)


async def _refused(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition | Retry:
    assert outcome.refused is not None
    problem = outcome.refused.problem()

    async def answer(_: asyncpg.Connection, __: asyncpg.Record) -> Answer:
        return Answer.problem(problem)

    return Transition("failed", event="refused", answer=answer)


async def _final(_: asyncpg.Connection, row: asyncpg.Record) -> Answer:
    return Answer(201, {"id": str(row["id"]), "status": row["status"], "txn_id": str(row["txn_id"])})


def _charge(row: asyncpg.Record) -> LedgerCall:
    return LedgerCall("charge", "/v1/burn", {"points": row["points"], "reference": str(row["id"])})


class ItemSaga(SagaDefinition):
    kind = "item"
    table = SagaTable(
        f"{SCHEMA}.items",
        f"{SCHEMA}.item_events",
        "item_id",
        unfinished=("pending",),
        final=frozenset({"done", "failed"}),
        columns={"txn_id": "uuid"},
    )
    CHARGE = Step("charge", _charged, call=_charge, refused=_refused)

    def step(self, row: asyncpg.Record) -> Step | None:
        return self.CHARGE if row["status"] == "pending" else None

    async def progress(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
        return Answer(202, {"id": str(row["id"]), "status": row["status"]})


async def _held(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition | Retry:
    return Transition("charged", {"txn": str(outcome.txn_id)}, values={"txn_id": outcome.txn_id})


async def _settled(_: asyncpg.Connection, __: asyncpg.Record, ___: Outcome) -> Transition | Retry:
    return Transition("done", answer=_final)


class PureItemSaga(ItemSaga):
    """A pure first step (its outcome stored without the row lock), then a step that settles."""

    table = replace(ItemSaga.table, unfinished=("pending", "charged"))
    CHARGE = Step("charge", _held, call=_charge, refused=_refused, pure=True)
    SETTLE = Step("settle", _settled)

    def step(self, row: asyncpg.Record) -> Step | None:
        return {"pending": self.CHARGE, "charged": self.SETTLE}.get(row["status"])


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=6, application_name="saga-tests")
    async with database.driver() as conn:
        await conn.execute(DDL)
    try:
        yield database
    finally:
        async with database.driver() as conn:
            await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await database.dispose()


@pytest.fixture
async def ledger() -> AsyncIterator[tuple[Ledger, LedgerClient]]:
    fake = Ledger()
    client = LedgerClient("http://ledger", "key", attempts=1, transport=httpx.MockTransport(fake.handle))
    try:
        yield fake, client
    finally:
        await client.aclose()


@pytest.fixture
def fake(ledger: tuple[Ledger, LedgerClient]) -> Ledger:
    return ledger[0]


@pytest.fixture
def runner(db: Database, ledger: tuple[Ledger, LedgerClient]) -> SagaRunner:
    """A runner of ItemSaga over the fake ledger, with short retries."""
    return _runner(db, ledger[1])


def _runner(db: Database, client: LedgerClient, definition: SagaDefinition | None = None) -> SagaRunner:
    timing = SagaTiming(lease_s=30.0, retry_base_s=0.2, retry_max_s=0.4, recovery_interval_s=0.05)
    return SagaRunner(definition or ItemSaga(), db, client, timing)


async def _start(runner: SagaRunner, key: str | None = None, points: int = 10) -> tuple[Answer, uuid.UUID]:
    item_id = uuid.uuid4()
    key = key or uuid.uuid4().hex

    async def create(conn: asyncpg.Connection) -> asyncpg.Record:
        if points <= 0:
            raise ledger_refusal(422, "invalid_points", "points must be positive")
        row: asyncpg.Record = await conn.fetchrow(
            f"INSERT INTO {SCHEMA}.items (id, status, points, api_key_id, idempotency_key, lease_until)"
            " VALUES ($1, 'pending', $2, 1, $3, now() + make_interval(secs => $4)) RETURNING *",
            item_id,
            points,
            key,
            runner.lease_s,
        )
        return row

    answer = await runner.start(Operation(1, key, b"hash", item_id), create)
    return answer, item_id


async def _events(db: Database, item_id: uuid.UUID) -> list[str]:
    async with db.driver() as conn:
        rows = await conn.fetch(
            f"SELECT event FROM {SCHEMA}.item_events WHERE item_id = $1 ORDER BY id", item_id
        )
    return [r["event"] for r in rows]


async def test_accepted_then_replayed_from_the_record(db: Database, fake: Ledger, runner: SagaRunner) -> None:
    key = uuid.uuid4().hex
    answer, item_id = await _start(runner, key)
    assert answer.status == 201 and answer.body["status"] == "done" and not answer.replayed
    replay = await runner.replay_known(1, key, b"hash")
    assert replay is not None and replay.replayed and (replay.status, replay.body) == (201, answer.body)
    assert fake.calls == 1
    assert await _events(db, item_id) == ["done"]


async def test_refusals_pass_the_ledgers_code_through_and_are_recorded(
    db: Database, ledger: tuple[Ledger, LedgerClient]
) -> None:
    fake, client = ledger
    runner = _runner(db, client)
    fake.answer = refusing(422, "insufficient_points")
    key = uuid.uuid4().hex
    answer, _ = await _start(runner, key)
    assert (answer.status, answer.body["code"]) == (422, "insufficient_points")
    replay = await runner.replay_known(1, key, b"hash")
    assert replay is not None and (replay.status, replay.body) == (answer.status, answer.body)
    assert fake.calls == 1  # the replay did not call the ledger again

    # a refusal of the service's own call (its key) is not the client's: 502 ledger_rejected
    fake.answer = refusing(403, "insufficient_scope")
    answer, _ = await _start(runner)
    assert (answer.status, answer.body["code"], answer.body["ledger_code"]) == (
        502,
        "ledger_rejected",
        "insufficient_scope",
    )
    # a refusal raised while creating is the key's answer too, and nothing was driven
    answer, _ = await _start(runner, points=0)
    assert (answer.status, answer.body["code"]) == (422, "invalid_points")


async def test_unreachable_ledger_waits_for_the_backoff_then_recovery_completes(
    db: Database, fake: Ledger, runner: SagaRunner
) -> None:
    fake.answer = down
    key = uuid.uuid4().hex
    answer, item_id = await _start(runner, key)
    assert (answer.status, answer.body["status"]) == (202, "pending")
    async with db.driver() as conn:
        row = await conn.fetchrow(
            f"SELECT attempts, lease_until, next_attempt_at > now() AS later FROM {SCHEMA}.items"
            " WHERE id = $1",
            item_id,
        )
    assert (row["attempts"], row["lease_until"], row["later"]) == (1, None, True)
    assert item_id not in await runner.find_due(100)  # not before its retry is due
    replay = await runner.replay_known(1, key, b"hash")  # nobody drives it: where it stands, not in use
    assert replay is not None and (replay.status, replay.replayed) == (202, True)

    fake.answer = fake.posted
    for _ in range(50):
        if item_id in await runner.find_due(100):
            break
        await asyncio.sleep(0.05)
    recovery = runner.recovery()
    recovery.start()
    try:
        for _ in range(100):
            final = await runner.replay_known(1, key, b"hash")
            if final is not None and final.status == 201:
                break
            await asyncio.sleep(0.05)
    finally:
        await recovery.stop()
    assert final is not None and final.status == 201 and final.body["status"] == "done"
    assert await _events(db, item_id) == ["retry_scheduled", "done"]


async def test_retry_now_drives_a_waiting_saga_before_its_backoff_and_never_a_finished_one(
    db: Database, fake: Ledger, runner: SagaRunner
) -> None:
    runner.timing = SagaTiming(
        lease_s=30.0, retry_base_s=3600.0, retry_max_s=3600.0, recovery_interval_s=3600
    )
    fake.answer = down
    key = uuid.uuid4().hex
    answer, item_id = await _start(runner, key)
    assert (answer.status, answer.body["status"]) == (202, "pending")
    assert item_id not in await runner.find_due(100)  # its retry is an hour away
    fake.answer = fake.posted
    assert await runner.retry_now(item_id)  # an operator's retry: driven now
    final = await runner.replay_known(1, key, b"hash")
    assert final is not None and final.status == 201 and final.body["status"] == "done"
    calls = fake.calls
    assert not await runner.retry_now(item_id)  # finished: nothing to retry, the ledger is not called
    assert fake.calls == calls
    assert await _events(db, item_id) == ["retry_scheduled", "done"]


async def test_a_replay_while_the_saga_is_driven_is_in_use(fake: Ledger, runner: SagaRunner) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return await fake.posted(request)

    fake.answer = slow
    key = uuid.uuid4().hex
    first = asyncio.create_task(_start(runner, key))
    await asyncio.wait_for(arrived.wait(), 10)
    with pytest.raises(IdempotencyInUse):
        await runner.replay_known(1, key, b"hash")
    release.set()
    answer, _ = await first
    assert answer.status == 201


async def test_two_drivers_apply_a_step_once(db: Database, ledger: tuple[Ledger, LedgerClient]) -> None:
    """A driver whose lease ran out and the one that took over both call the ledger (same key: one
    posting); only the first to store the outcome applies it, the other finds the saga moved on."""
    fake, client = ledger
    runner = _runner(db, client)
    fake.answer = down
    answer, item_id = await _start(runner)  # parked, nobody drives it
    assert answer.status == 202
    both = asyncio.Barrier(2)

    async def together(request: httpx.Request) -> httpx.Response:
        await both.wait()  # both drivers have called before either stores the outcome
        return await fake.posted(request)

    fake.answer = together
    await asyncio.wait_for(asyncio.gather(runner.drive(item_id), runner.drive(item_id)), 10)
    assert await _events(db, item_id) == ["retry_scheduled", "done"]


async def test_two_drivers_apply_a_pure_step_once(db: Database, ledger: tuple[Ledger, LedgerClient]) -> None:
    """The same race on a pure step, whose outcome is stored by a conditional statement without the row
    lock: still only the first to store it applies it, and the saga goes on from there once."""
    fake, client = ledger
    runner = _runner(db, client, PureItemSaga())
    fake.answer = down
    answer, item_id = await _start(runner)
    assert answer.status == 202
    assert await _events(db, item_id) == ["retry_scheduled"]  # an unanswered pure step: one statement
    both = asyncio.Barrier(2)

    async def together(request: httpx.Request) -> httpx.Response:
        await both.wait()
        return await fake.posted(request)

    fake.answer = together
    await asyncio.wait_for(asyncio.gather(runner.drive(item_id), runner.drive(item_id)), 10)
    assert await _events(db, item_id) == ["retry_scheduled", "charged", "done"]
    async with db.driver() as conn:
        row = await conn.fetchrow(f"SELECT status, attempts FROM {SCHEMA}.items WHERE id = $1", item_id)
    assert (row["status"], row["attempts"]) == ("done", 1)


async def test_purge_keeps_pending_keys_whatever_their_age(db: Database) -> None:
    async with db.driver() as conn:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.idempotency_keys (api_key_id, key, request_hash, status, body, created_at)"
            " VALUES (-1, $1, '\\x00', $2, '{}', now() - make_interval(days => $3))",
            [("old", 201, 31), ("pending", PENDING, 400), ("recent", 201, 29)],
        )
    assert await purge_expired_keys(db, SCHEMA, 30, batch=1) == 1
    async with db.driver() as conn:
        left = await conn.fetch(f"SELECT key FROM {SCHEMA}.idempotency_keys WHERE api_key_id = -1")
    assert {r["key"] for r in left} == {"pending", "recent"}


def test_one_retry_after_for_an_unreachable_ledger() -> None:
    response = Answer(503, {"code": "ledger_unavailable"}, replayed=True).response()
    assert response.headers["Retry-After"] == str(LEDGER_RETRY_AFTER_S)
    assert response.headers["Idempotent-Replayed"] == "true"
    assert ledger_refusal(404, "program_not_found", "no such program").status == 404
    assert ledger_refusal(400, "validation_error", "bad call").status == 502
