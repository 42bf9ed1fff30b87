"""One saga runner for the services whose work takes several ledger calls: conversions (DESIGN §5) and
redemptions (§6). A service defines only its domain steps; the runner does the rest, the same way for
every saga.

A saga is one row of its service's table (`SagaTable`: `id`, `status`, `attempts`, `next_attempt_at`,
`lease_until`, `updated_at`, `finished_at`, plus the service's own columns) with a history table of
events. The service's `SagaDefinition.step(row)` says what the row's status calls for: a ledger call
(path and body built from the stored row only, so every retry is the same request) and what each reply
does to the row and to the service's own data. The runner:

- stores every transition, with its history events, under the row lock, in one transaction with the
  step's own writes (a `pure` step's outcome that settles nothing: one conditional statement instead); a
  step's outcome is stored only if the row is still at the step it started from, so two drivers of one
  saga (a live request, and recovery after a lease ran out) never both apply it;
- sends each ledger call with a key derived from the saga id (`{kind}:{id}:{call key}`), so a repeated
  step is replayed by the ledger, never applied twice;
- sorts the ledger's replies: accepted, refused for good (LedgerRejected: the step's `refused`), or no
  answer (LedgerUnavailable: by default the status stays and a retry is scheduled with exponential
  backoff and jitter, `next_attempt_at`; the step may compensate instead);
- leases: whoever drives a saga holds `lease_until` (renewed at every transition); `SagaRecovery` (at
  start-up and on a schedule) and replays take only sagas whose lease ran out and whose retry is due;
- Idempotency-Key: the operation that starts (or continues) a saga records its key PENDING in the
  transaction that creates the saga; the transition that settles the operation writes the final answer
  into it (IdempotencyStore.finish) in the same transaction. A replay returns the final answer, drives a
  saga whose driver died, or answers `409 idempotency_key_in_use` while a driver holds it.

Answers for an unreachable or refusing ledger are the same in every service (services.errors):
`503 ledger_unavailable` with one Retry-After; a refusal passes the ledger's own status and code through.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg
import orjson
from prometheus_client import Counter
from starlette.responses import Response

from services.db import Database
from services.errors import LEDGER_RETRY_AFTER, PROBLEM_JSON, Conflict, DomainError, problem_body
from services.idempotency import PENDING, REPLAYED_HEADER, IdempotencyInUse, IdempotencyStore, StoredResponse
from services.ledger_client import LedgerClient, LedgerRejected, LedgerReply, LedgerUnavailable
from services.periodic import cancel_tasks

log = logging.getLogger("jifen.saga")

LEDGER_CALLS = Counter(
    "jifen_saga_ledger_calls_total", "Ledger calls made by saga steps", ["saga", "step", "outcome"]
)
TRANSITIONS = Counter("jifen_saga_transitions_total", "Saga status changes stored", ["saga", "status"])

MAX_STEPS = 16  # one drive never takes more steps than this (a saga that loops is a bug, logged)

V = TypeVar("V")


@dataclass(frozen=True)
class Answer:
    """A response as an Idempotency-Key record keeps it: status and JSON body (problem+json if >= 400)."""

    status: int
    body: Any
    replayed: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def problem(cls, error: DomainError) -> Answer:
        body = problem_body(error.status, error.code, error.detail, extra=error.extra)
        return cls(error.status, body, headers=error.headers)

    def response(self) -> Response:
        headers = dict(self.headers)
        if self.status == 503:  # the ledger was unreachable; a replay of the answer keeps its Retry-After
            headers = {**LEDGER_RETRY_AFTER, **headers}
        if self.replayed:
            headers[REPLAYED_HEADER] = "true"
        media = PROBLEM_JSON if self.status >= 400 else "application/json"
        return Response(orjson.dumps(self.body), status_code=self.status, media_type=media, headers=headers)


@dataclass(frozen=True)
class LedgerCall:
    """A step's ledger write. `key` names it among the saga's calls: the Idempotency-Key sent is
    `{kind}:{saga id}:{key}`, so every retry of the step (and any step reusing the key) is one request."""

    key: str
    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What the ledger answered a step's call (all None for a step without a call)."""

    reply: LedgerReply | None = None
    refused: LedgerRejected | None = None
    unreachable: str | None = None

    @property
    def txn_id(self) -> UUID:
        """The ledger transaction the accepted call posted (or replayed)."""
        assert self.reply is not None
        return UUID(str(self.reply.body["id"]))

    @property
    def replayed(self) -> bool:
        return self.reply is not None and self.reply.replayed


Event = tuple[str, Mapping[str, Any] | None]  # a history event: name, detail
AnswerOf = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[Answer]]


@dataclass(frozen=True)
class Transition:
    """The saga's next status, stored with its history in the step's transaction."""

    status: str
    detail: Mapping[str, Any] | None = None  # of the event the transition records
    event: str | None = None  # that event's name; default: the new status
    before: Sequence[Event] = ()  # events recorded before it, in order
    values: Mapping[str, Any] = field(default_factory=dict)  # the table's own columns (None: unchanged)
    answer: AnswerOf | None = None  # settles the operation: its final answer, from the stored row
    wait: bool = False  # stop driving; the saga goes on (recovery) after the retry backoff


@dataclass(frozen=True)
class Retry:
    """The status stays; the step is tried again after `delay_s` (default: the runner's backoff)."""

    error: str
    delay_s: float | None = None
    event: str = "retry_scheduled"
    detail: Mapping[str, Any] | None = None


Handler = Callable[[asyncpg.Connection, asyncpg.Record, Outcome], Awaitable[Transition | Retry]]


async def retry_later(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Retry:
    """The default when the ledger could not be reached: the outcome is unknown, try the same call again."""
    return Retry(outcome.unreachable or "the ledger could not be reached")


@dataclass(frozen=True)
class Step:
    """What a status calls for: an optional ledger call, and what each kind of reply does. A handler
    runs under the saga's row lock, in the transaction that stores the transition it returns."""

    name: str  # for metrics, logs and the test-only fault points (before_<name>, after_<name>)
    done: Handler  # the ledger accepted the call (or there is no call)
    call: Callable[[asyncpg.Record], LedgerCall] | None = None
    refused: Handler | None = None  # the ledger refused for good (required with a call)
    unreachable: Handler = retry_later  # no answer, after the client's own retries
    # `done` and `unreachable` only read the row and the outcome (no SQL, no other effect), and the status
    # alone says which step it is: such an outcome that settles no operation is then stored by one
    # conditional statement, without a transaction and the row lock (SagaRunner._apply).
    pure: bool = False


@dataclass(frozen=True)
class SagaTable:
    """Where a kind of saga is stored: `table` has the runner's columns (module docstring) and `columns`
    (name -> PostgreSQL type; type `now` is a timestamp a transition sets to now() with True);
    `events` has (`event_fk`, status, event, detail)."""

    table: str
    events: str
    event_fk: str
    unfinished: tuple[str, ...]  # statuses with work left: driven, leased, resumed
    final: frozenset[str]  # statuses that end the saga for good (`finished_at`)
    columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    def unfinished_sql(self) -> str:
        """`status IN (...)` as literals, so the planner matches the partial index on due sagas."""
        return "status IN (" + ", ".join(f"'{s}'" for s in self.unfinished) + ")"


@dataclass(frozen=True)
class SagaTiming:
    """How a service's sagas are paced (its settings say): a driver's lease, the retry backoff (doubling
    from `retry_base_s` up to `retry_max_s`, with jitter) and how often recovery looks for due sagas."""

    lease_s: float
    retry_base_s: float
    retry_max_s: float
    recovery_interval_s: float


@dataclass(frozen=True)
class CommitWith:
    """The last statement of the transaction that starts a saga, sent in one message with its COMMIT.

    For a hot row (a reward's stock): its lock is then held from the UPDATE to the end of the COMMIT with
    no round trip to this process in between, so the next request waiting for it never waits for this
    process's event loop too. `sql` has no parameters (literals only); if it fails, nothing of the
    transaction is kept, and `refusal` says whether the error is the operation's refusal (recorded as
    the key's answer) or not (raised)."""

    sql: str
    refusal: Callable[[asyncpg.PostgresError], DomainError | None]


@dataclass(frozen=True)
class Operation:
    """A request that starts or continues a saga, with its Idempotency-Key."""

    api_key_id: int
    key: str
    request_hash: bytes
    saga_id: UUID


class SagaDefinition(ABC):
    """A service's saga: its name, its table, its steps and the answers it gives. Nothing else."""

    kind: str  # "conversion": ledger keys `conversion:{id}:...`, records point at `conversion_id`
    table: SagaTable

    @abstractmethod
    def step(self, row: asyncpg.Record) -> Step | None:
        """The step the row's status calls for; None when nothing is left to do."""

    @abstractmethod
    async def progress(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
        """The answer for an operation the saga has not settled (yet): where it stands now."""

    def operation(self, row: asyncpg.Record) -> tuple[int, str] | None:
        """(API key id, Idempotency-Key) of the operation the saga's current run answers."""
        key: str | None = row["idempotency_key"]
        return None if key is None else (row["api_key_id"], key)

    def headers(self, answer: Answer) -> Mapping[str, str]:
        """Headers every answer of this saga carries (first or replayed), e.g. Location."""
        return {}

    async def fault(self, point: str, row: asyncpg.Record) -> None:  # noqa: B027 (a hook; none by default)
        """TEST ONLY: called at `before_<step>`, `after_<step>` (the ledger accepted) and `at_<status>`
        (just stored and committed), so a test can crash or pause the process there."""


class SagaRunner:
    """Drives the sagas of one definition: starting operations, steps, retries, leases, replays, recovery."""

    def __init__(
        self,
        definition: SagaDefinition,
        db: Database,
        ledger: LedgerClient,
        timing: SagaTiming,
    ) -> None:
        self.definition = definition
        self.kind = definition.kind
        self.table = table = definition.table
        self.db = db
        self.ledger = ledger
        self.timing = timing
        self.lease_s = timing.lease_s
        self.store = IdempotencyStore(table.schema)
        self.pointer = f"{definition.kind}_id"
        self._columns = list(table.columns)
        sets = "".join(
            f",\n        {c} = CASE WHEN ${i}::boolean THEN now() ELSE {c} END"
            if t == "now"
            else f",\n        {c} = coalesce(${i}::{t}, {c})"
            for i, (c, t) in enumerate(table.columns.items(), start=9)
        )
        t, due = table.table, table.unfinished_sql()
        self._get = f"SELECT * FROM {t} WHERE id = $1"
        self._lock = f"SELECT * FROM {t} WHERE id = $1 FOR UPDATE"
        # Every transition, retry and wait in one statement: status, lease ($3 s, or none), next attempt
        # ($4 s from now, counting an attempt), finished, the service's columns, and the history events;
        # with $8, only if the status still is $8 (a pure step's outcome, stored without the row lock:
        # the UPDATE waits for any other driver's lock and checks the status again after it).
        self._advance = f"""
WITH s AS (
    UPDATE {t} SET
        status = $2,
        lease_until = CASE WHEN $3::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $3) END,
        next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                               ELSE now() + make_interval(secs => $4) END,
        attempts = attempts + CASE WHEN $4::float8 IS NULL THEN 0 ELSE 1 END,
        finished_at = CASE WHEN $5 THEN now() ELSE finished_at END,
        updated_at = now(){sets}
    WHERE id = $1 AND ($8::text IS NULL OR status = $8::text)
    RETURNING *
), e AS (
    INSERT INTO {table.events} ({table.event_fk}, status, event, detail)
    SELECT s.id, s.status, x.event, x.detail::jsonb
    FROM s, unnest($6::text[], $7::text[]) WITH ORDINALITY AS x (event, detail, n)
    ORDER BY x.n
)
SELECT * FROM s
"""
        self._claim = f"""
UPDATE {t} SET lease_until = now() + make_interval(secs => $2)
WHERE id = $1 AND {due} AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
RETURNING *
"""
        self._leased = f"SELECT {due} AND lease_until > now() FROM {t} WHERE id = $1"
        # An operator's "retry now": the next attempt made due at once, unless a driver holds the saga.
        self._due_now = f"""
UPDATE {t} SET next_attempt_at = now()
WHERE id = $1 AND {due} AND (lease_until IS NULL OR lease_until <= now())
RETURNING id
"""
        self._due = f"""
SELECT id FROM {t}
WHERE {due} AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
ORDER BY next_attempt_at LIMIT $1
"""

    def ledger_key(self, saga_id: UUID, call_key: str) -> str:
        return f"{self.kind}:{saga_id}:{call_key}"

    def backoff(self, attempts: int) -> float:
        """Exponential from `retry_base_s`, at most `retry_max_s`, with +-25% jitter."""
        delay = min(self.timing.retry_max_s, self.timing.retry_base_s * 2 ** min(attempts, 30))
        return float(delay * (0.75 + 0.5 * random.random()))

    # --- operations (requests with an Idempotency-Key) ---------------------------------------------

    async def replay_known(self, api_key_id: int, key: str, request_hash: bytes) -> Answer | None:
        """The answer for a key already recorded, read without its lock (before any pricing)."""
        async with self.db.driver() as conn:
            stored = await self.store.lookup(conn, api_key_id, key, request_hash)
        return None if stored is None else await self._replay(stored, api_key_id, key)

    async def _record_refusal(
        self, conn: asyncpg.Connection, op: Operation, refusal: DomainError
    ) -> tuple[Answer, StoredResponse | None]:
        """The refusal recorded as the key's answer (in autocommit: one statement); or what the key
        already had (then the answer is not recorded)."""
        refused = Answer.problem(refusal)
        stored = await self.store.claim_new(
            conn, op.api_key_id, op.key, op.request_hash, refused.status, refused.body
        )
        return self._out(refused), stored

    async def start(
        self,
        op: Operation,
        create: Callable[[asyncpg.Connection], Awaitable[asyncpg.Record]],
        *,
        savepoint: bool = False,
        keep_interim: bool = False,
        last: Callable[[asyncpg.Record], CommitWith | None] | None = None,
        screen: Callable[[asyncpg.Connection], Awaitable[DomainError | Answer | None]] | None = None,
    ) -> Answer:
        """Runs an operation on saga `op.saga_id` exactly once per Idempotency-Key, and answers it.

        One transaction claims the key, records it PENDING (pointing at the saga) and runs `create`,
        which writes the saga's row in an unfinished status, leased to this request (`self.lease_s`),
        and returns it; a DomainError it raises is the operation's refusal, recorded as its answer
        (with `savepoint`, whatever `create` wrote is rolled back first). `last(row)` may name one more
        statement, sent with the COMMIT (CommitWith). The saga is then driven inline; the answer is the
        one its settling transition recorded, or where it stands (recorded too with `keep_interim`: the
        first answer then stays the key's answer).

        `screen(conn)` reads first, on the same connection, outside the transaction: a refusal it returns
        is recorded as the key's answer in one statement and nothing else is written (a known key still
        answers as it would: its replay, or 409 in use / reused). One connection for the whole start
        matters when every request of a flash sale wants one at the same moment. An Answer it returns is
        one it recorded as the key's answer itself (in the statement that read what refuses it)."""
        pending = {self.pointer: str(op.saga_id)}
        stored: StoredResponse | None = None
        async with self.db.driver() as conn:
            screened = None if screen is None else await screen(conn)
            if isinstance(screened, Answer):
                return self._out(screened)
            if screened is not None:
                answer, stored = await self._record_refusal(conn, op, screened)
                if stored is None:
                    return answer
            else:
                tail: CommitWith | None = None
                await conn.execute("BEGIN")
                try:
                    stored = await self.store.claim_new(
                        conn, op.api_key_id, op.key, op.request_hash, PENDING, pending
                    )
                    if stored is None:
                        if savepoint:  # never released: COMMIT does that, one round trip fewer
                            await conn.execute("SAVEPOINT saga_start")
                        try:
                            row = await create(conn)
                        except DomainError as refusal:
                            if savepoint:
                                await conn.execute("ROLLBACK TO SAVEPOINT saga_start")
                            refused = Answer.problem(refusal)
                            await self.store.finish(conn, op.api_key_id, op.key, refused.status, refused.body)
                            await conn.execute("COMMIT")
                            return self._out(refused)
                        tail = None if last is None else last(row)
                    await conn.execute("COMMIT" if tail is None else f"{tail.sql};\nCOMMIT")
                except asyncpg.PostgresError as exc:
                    await conn.execute("ROLLBACK")
                    refused_by = None if tail is None else tail.refusal(exc)
                    if refused_by is None:
                        raise
                    # Nothing of the transaction is left: the refusal is the key's answer, recorded alone.
                    answer, stored = await self._record_refusal(conn, op, refused_by)
                    if stored is None:
                        return answer
                except BaseException:
                    if not conn.is_closed() and conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    raise
        if stored is not None:
            return await self._replay(stored, op.api_key_id, op.key)
        recorded = await self.drive(op.saga_id, row)
        if recorded is not None:
            return self._out(recorded)
        # not settled by this drive: the ledger is unreachable, or another driver moved the saga
        return self._out(await self._settle(op.api_key_id, op.key, op.saga_id, keep_interim=keep_interim))

    async def _replay(self, stored: StoredResponse, api_key_id: int, key: str) -> Answer:
        if stored.status != PENDING:
            return self._out(Answer(stored.status, stored.body, replayed=True))
        # The first request's saga has not settled it: being driven (in use), waiting for a retry, or
        # left by a driver that died (drive it here, now).
        saga_id = UUID(str(stored.body[self.pointer]))
        async with self.db.driver() as conn:
            row = await conn.fetchrow(self._claim, saga_id, self.lease_s)
            if row is None and await conn.fetchval(self._leased, saga_id):
                raise IdempotencyInUse()
        if row is not None:
            log.info("a replay drives its saga", extra={"saga": self.kind, "id": str(saga_id)})
            recorded = await self.drive(saga_id, row)
            if recorded is not None:
                return self._out(replace(recorded, replayed=True))
        return self._out(await self._settle(api_key_id, key, saga_id, replayed=True))

    async def _settle(
        self, api_key_id: int, key: str, saga_id: UUID, *, replayed: bool = False, keep_interim: bool = False
    ) -> Answer:
        """The key's final answer; without one, where the saga stands (`progress`), recorded as final
        when the saga has ended (a record left pending) or with `keep_interim`."""
        async with self.db.driver() as conn, conn.transaction():
            stored = await self.store.lookup(conn, api_key_id, key)
            if stored is not None and stored.status != PENDING:
                return Answer(stored.status, stored.body, replayed=replayed)
            row = await conn.fetchrow(self._get, saga_id)
            assert row is not None, f"{self.kind} {saga_id} of a recorded key is missing"
            answer = await self.definition.progress(conn, row)
            if keep_interim or row["status"] not in self.table.unfinished:
                await self.store.finish(conn, api_key_id, key, answer.status, answer.body)
        return replace(answer, replayed=replayed)

    def _out(self, answer: Answer) -> Answer:
        extra = self.definition.headers(answer)
        return replace(answer, headers={**answer.headers, **extra}) if extra else answer

    # --- driving ---------------------------------------------------------------------------------------

    async def drive(self, saga_id: UUID, row: asyncpg.Record | None = None) -> Answer | None:
        """Advances a saga this caller holds the lease of, as far as it goes now: until it ends, waits
        (a retry scheduled), or another driver moved it. Returns the final answer this drive recorded
        for an Idempotency-Key, if it recorded one. `row`: the saga as the caller just read it."""
        answer: Answer | None = None
        for _ in range(MAX_STEPS):
            if row is None:
                async with self.db.driver() as conn:
                    row = await conn.fetchrow(self._get, saga_id)
                if row is None:
                    return answer
            step = self.definition.step(row)
            if step is None:
                return answer
            outcome = await self._call(step, row)
            applied = await self._apply(saga_id, row["status"], step, outcome, row)
            if applied is None:
                return answer
            row, recorded, go_on, moved = applied
            answer = recorded or answer
            if moved:
                await self.definition.fault(f"at_{row['status']}", row)
            if not go_on:
                return answer
        log.error("saga took too many steps in one drive", extra={"saga": self.kind, "id": str(saga_id)})
        return answer

    async def _call(self, step: Step, row: asyncpg.Record) -> Outcome:
        if step.call is None:
            return Outcome()
        call = step.call(row)
        await self.definition.fault(f"before_{step.name}", row)
        try:
            reply = await self.ledger.post(call.path, call.body, key=self.ledger_key(row["id"], call.key))
        except LedgerRejected as exc:
            LEDGER_CALLS.labels(self.kind, step.name, "refused").inc()
            return Outcome(refused=exc)
        except LedgerUnavailable as exc:
            LEDGER_CALLS.labels(self.kind, step.name, "unreachable").inc()
            return Outcome(unreachable=str(exc))
        LEDGER_CALLS.labels(self.kind, step.name, "accepted").inc()
        await self.definition.fault(f"after_{step.name}", row)
        return Outcome(reply=reply)

    async def _apply(
        self, saga_id: UUID, status: str, step: Step, outcome: Outcome, seen: asyncpg.Record
    ) -> tuple[asyncpg.Record, Answer | None, bool, bool] | None:
        """Stores the step's outcome if the saga is still at that step. Returns the stored row, the answer
        recorded, whether to go on, and whether the status moved; None if another driver moved the saga
        first. `seen`: the row the step was taken from.

        A `pure` step's accepted or unanswered call that settles no operation is one conditional
        statement (the status must still be the one the step was taken from), no transaction; anything
        else is stored under the row lock, in one transaction with the handler's writes and the answer
        it records."""
        if step.pure and outcome.refused is None:
            async with self.db.driver() as conn:
                result = await self._handle(conn, seen, step, outcome)
                if isinstance(result, Retry) or result.answer is None:
                    stored = await self._store_result(conn, saga_id, seen, step, result, expect=status)
                    if stored is None:
                        self._skipped(saga_id, step)
                        return None
                    return stored[0], None, stored[1], stored[2]
            # it settles an operation: stored with the answer, below (a pure handler may run again)
        async with self.db.driver() as conn, conn.transaction():
            row = await conn.fetchrow(self._lock, saga_id)
            now = None if row is None or row["status"] != status else self.definition.step(row)
            if row is None or now is None or now.name != step.name:
                self._skipped(saga_id, step)
                return None
            result = await self._handle(conn, row, step, outcome)
            stored = await self._store_result(conn, saga_id, row, step, result)
            assert stored is not None  # under the row lock, nobody else moved it
            new, go_on, moved = stored
            recorded = None
            if isinstance(result, Transition) and result.answer is not None:
                answer = await result.answer(conn, new)
                op = self.definition.operation(new)
                if op is not None and await self.store.finish(conn, *op, answer.status, answer.body):
                    recorded = answer
        return new, recorded, go_on, moved

    def _skipped(self, saga_id: UUID, step: Step) -> None:
        log.info(
            "saga step skipped: another driver moved it",
            extra={"saga": self.kind, "id": str(saga_id), "step": step.name},
        )

    async def _handle(
        self, conn: asyncpg.Connection, row: asyncpg.Record, step: Step, outcome: Outcome
    ) -> Transition | Retry:
        if outcome.refused is not None:
            assert step.refused is not None, f"step {step.name} calls the ledger without `refused`"
            return await step.refused(conn, row, outcome)
        if outcome.unreachable is not None:
            return await step.unreachable(conn, row, outcome)
        return await step.done(conn, row, outcome)

    async def _store_result(
        self,
        conn: asyncpg.Connection,
        saga_id: UUID,
        row: asyncpg.Record,
        step: Step,
        result: Transition | Retry,
        *,
        expect: str | None = None,
    ) -> tuple[asyncpg.Record, bool, bool] | None:
        """Stores a handler's result: (the stored row, whether to go on, whether the status moved); None
        if the saga's status was no longer `expect`."""
        if isinstance(result, Retry):
            delay = result.delay_s if result.delay_s is not None else self.backoff(row["attempts"])
            detail = {"step": step.name, "error": result.error[:500], "retry_in_s": round(delay, 3)}
            detail.update(result.detail or {})
            new = await self._store(
                conn, saga_id, row["status"], None, delay, False, [(result.event, detail)], {}, expect
            )
            if new is None:
                return None
            log.warning(
                "saga step will be retried",
                extra={
                    "saga": self.kind,
                    "id": str(saga_id),
                    "step": step.name,
                    "retry_in_s": detail["retry_in_s"],
                },
            )
            return new, False, False
        ended = result.status not in self.table.unfinished
        go_on = not (ended or result.wait)
        events = [*result.before, (result.event or result.status, result.detail)]
        new = await self._store(
            conn,
            saga_id,
            result.status,
            self.lease_s if go_on else None,
            self.backoff(row["attempts"]) if result.wait else None,
            result.status in self.table.final,
            events,
            result.values,
            expect,
        )
        if new is None:
            return None
        TRANSITIONS.labels(self.kind, result.status).inc()
        return new, go_on, True

    async def _store(
        self,
        conn: asyncpg.Connection,
        saga_id: UUID,
        status: str,
        lease_s: float | None,
        wait_s: float | None,
        finished: bool,
        events: Sequence[Event],
        values: Mapping[str, Any],
        expect: str | None = None,
    ) -> asyncpg.Record | None:
        """The advance; None if `expect` is given and the saga's status is another."""
        unknown = set(values) - set(self._columns)
        assert not unknown, f"not columns of {self.table.table}: {unknown}"
        row: asyncpg.Record | None = await conn.fetchrow(
            self._advance,
            saga_id,
            status,
            lease_s,
            wait_s,
            finished,
            [e[0] for e in events],
            [None if e[1] is None else orjson.dumps(e[1]).decode() for e in events],
            expect,
            *(values.get(c) for c in self._columns),
        )
        return row

    # --- recovery --------------------------------------------------------------------------------------

    async def find_due(self, limit: int) -> list[UUID]:
        """Unfinished sagas nobody holds whose retry is due (a dead driver's, or a scheduled retry)."""
        async with self.db.driver() as conn:
            return [r["id"] for r in await conn.fetch(self._due, limit)]

    async def resume(self, saga_id: UUID) -> None:
        """Takes the saga's lease if it is still free and due, and drives it."""
        async with self.db.driver() as conn:
            row = await conn.fetchrow(self._claim, saga_id, self.lease_s)
        if row is not None:
            await self.drive(saga_id, row)

    async def retry_now(self, saga_id: UUID) -> bool:
        """Makes an unfinished saga's next attempt due now and drives it, as recovery would when its
        backoff ran out. Safe at any time: each step calls the ledger with the key it always uses, so a
        step that had already been applied is answered by the ledger's replay. False if the saga is
        finished or another driver holds it."""
        async with self.db.driver() as conn:
            if await conn.fetchval(self._due_now, saga_id) is None:
                return False
        await self.resume(saga_id)
        return True

    async def retry_for(self, saga_id: UUID, view: Callable[[], Awaitable[V]], what: str) -> V:
        """A client's `POST .../retry`: `view()` first (the saga exists and the caller may see it),
        then retry_now, 409 saga_not_retryable if it could not; the view as it is afterwards."""
        await view()
        if not await self.retry_now(saga_id):
            raise Conflict(f"The {what} is finished, or being driven right now.", code="saga_not_retryable")
        return await view()

    def recovery(self) -> SagaRecovery[UUID]:
        """Resumes this runner's due sagas at start-up and every `timing.recovery_interval_s`."""
        return SagaRecovery(self.kind, self.find_due, self.resume, interval_s=self.timing.recovery_interval_s)


# --- resuming on start-up and on a schedule ---------------------------------------------------------

Id = TypeVar("Id")


class SagaRecovery(Generic[Id]):
    """Picks unfinished sagas up at start-up (its first pass runs at once) and every `interval_s`:
    `find_due(limit)` returns the ids of sagas nobody drives whose retry is due, `resume(id)` takes one's
    lease and drives it (SagaRunner.find_due and .resume). A failing resume is logged and retried."""

    def __init__(
        self,
        name: str,
        find_due: Callable[[int], Awaitable[Sequence[Id]]],
        resume: Callable[[Id], Awaitable[None]],
        *,
        interval_s: float = 2.0,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self.find_due = find_due
        self.resume = resume
        self.interval_s = interval_s
        self.batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"saga-recovery-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_tasks([self._task])
            self._task = None

    async def run_once(self) -> int:
        """Resumes every due saga once; returns how many were attempted."""
        ids = await self.find_due(self.batch)

        async def one(saga_id: Id) -> None:
            async with self._limit:
                try:
                    await self.resume(saga_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "resuming saga failed; will retry", extra={"saga": self.name, "id": str(saga_id)}
                    )

        await asyncio.gather(*(one(i) for i in ids))
        return len(ids)

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.run_once()
                if n:
                    log.info("resumed sagas", extra={"saga": self.name, "count": n})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga recovery pass failed", extra={"saga": self.name})
            await asyncio.sleep(self.interval_s)
