"""The Idempotency-Key header (DESIGN §3): parsing, the fingerprint of a request body, the one store of
records for the services other than the ledger, and the one purge of expired keys for all three.

The ledger records its keys inside its posting function, in the same database transaction as the
postings; the conversion and catalog services record theirs with `IdempotencyStore`, through the saga
runner (services.saga). Every service's table has the same shape (`IDEMPOTENCY_TABLE_DDL`), so
`purge_expired_keys` serves them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import Header

from services.db import Database
from services.errors import BadRequest, Conflict

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and key.isprintable() and key.isascii()


def _check(key: str | None) -> str:
    if key is None or key == "":
        raise BadRequest(
            "This operation requires an Idempotency-Key header (1-255 printable characters).",
            code="idempotency_key_required",
        )
    if not valid_key(key):
        raise BadRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters.", code="invalid_idempotency_key"
        )
    return key


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="Required. 1-255 printable characters, unique per intended operation; "
            "a retry with the same key and body returns the original response.",
            examples=["pos-42-order-7781-earn"],
        ),
    ] = None,
) -> str:
    return _check(key)


def canonical_json(payload: Any) -> bytes:
    """The body as sorted-key JSON, so key order and whitespace do not make two bodies differ."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def fingerprint(operation: str, canonical: bytes) -> bytes:
    return hashlib.sha256(operation.encode() + b"\n" + canonical).digest()


# --- Idempotency records for services other than the ledger (whose record lives in its posting function).
# Each such service has a table `<schema>.idempotency_keys` with the DDL below, in its own migration.

IDEMPOTENCY_TABLE_DDL = """
CREATE TABLE {schema}.idempotency_keys (
    api_key_id bigint NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status int NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_created ON {schema}.idempotency_keys (created_at);
"""


class IdempotencyInUse(Conflict):
    code = "idempotency_key_in_use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            headers={"Retry-After": "1"},
        )


class IdempotencyReused(Conflict):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used with a different request; use a new key.")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


# The status of a record whose operation has not answered for good yet (a saga still running). Not an
# HTTP status, never sent: the record's body points at the saga, and `finish` writes the final answer.
PENDING = 0


class IdempotencyStore:
    """DESIGN §3 semantics inside the caller's database transaction (an asyncpg connection with a
    transaction open): `claim_new` takes a transaction-scoped advisory lock on the key (so a concurrent
    duplicate gets 409 in use at once) and returns the stored response if there is one, or records the
    response (or a PENDING record) in the same transaction as the effect it answers for; `finish` turns
    a PENDING record into the final answer, in the transaction that ends the operation."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._select = (
            f"SELECT request_hash, status, body::text AS body FROM {schema}.idempotency_keys"
            " WHERE api_key_id = $1 AND key = $2"
        )
        # The insert conflicts (does nothing) when the key is known: only committed records can be there,
        # since whoever writes one holds the key's lock until its COMMIT.
        self._claim_new = f"""
WITH l AS (SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS got),
i AS (
    INSERT INTO {schema}.idempotency_keys (api_key_id, key, request_hash, status, body)
    SELECT $2, $3, $4, $5, $6::jsonb FROM l WHERE l.got
    ON CONFLICT (api_key_id, key) DO NOTHING
    RETURNING 1
)
SELECT l.got, EXISTS (SELECT 1 FROM i) AS inserted FROM l
"""
        # claim_new after a read ($7 on) that decides whether to record: only if its row says `claim`.
        self._claim_when = f"""
WITH s AS MATERIALIZED ({{reading}}),
l AS (SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS got FROM s WHERE s.claim),
i AS (
    INSERT INTO {schema}.idempotency_keys (api_key_id, key, request_hash, status, body)
    SELECT $2, $3, $4, $5, $6::jsonb FROM l WHERE l.got
    ON CONFLICT (api_key_id, key) DO NOTHING
    RETURNING 1
)
SELECT s.*, (SELECT got FROM l) AS claimed, EXISTS (SELECT 1 FROM i) AS recorded FROM s
"""
        self._finish = (
            f"UPDATE {schema}.idempotency_keys SET status = $3, body = $4::jsonb"
            f" WHERE api_key_id = $1 AND key = $2 AND status = {PENDING}"
        )

    def _lock_id(self, api_key_id: int, key: str) -> str:
        return f"idem:{self.schema}:{api_key_id}:{key}"

    async def claim_new(
        self, conn: asyncpg.Connection, api_key_id: int, key: str, request_hash: bytes, status: int, body: Any
    ) -> StoredResponse | None:
        """Claims the key and, if it is new, records (status, body) for it: one round trip when it is new
        (the common case). A transaction-scoped advisory lock on the key answers a concurrent duplicate
        409 in use at once; the insert reads the lock's result, so it runs only once the lock is held.
        Returns None when it recorded; the stored response when the key was known (IdempotencyReused if
        for another request)."""
        got, inserted = await conn.fetchrow(
            self._claim_new, self._lock_id(api_key_id, key), api_key_id, key, request_hash, status,
            orjson.dumps(body).decode(),
        )  # fmt: skip
        if not got:
            raise IdempotencyInUse()
        if inserted:
            return None
        # Known: read it in a statement of its own, whose snapshot is taken after the lock was (one
        # statement's snapshot predates its lock, and could miss a record committed just before).
        row = await conn.fetchrow(self._select, api_key_id, key)
        assert row is not None, "a conflicting idempotency record vanished under its lock"
        if bytes(row["request_hash"]) != request_hash:
            raise IdempotencyReused()
        return StoredResponse(row["status"], orjson.loads(row["body"]))

    async def claim_new_when(
        self,
        conn: asyncpg.Connection,
        reading: str,
        reading_args: Sequence[Any],
        api_key_id: int,
        key: str,
        request_hash: bytes,
        status: int,
        body: Any,
    ) -> tuple[asyncpg.Record | None, bool | None]:
        """A read and, in the same statement, claim_new of (status, body) if the read says so: `reading`
        is a SELECT of at most one row with a boolean column `claim`, its parameters numbered from $7
        (`reading_args`). One round trip for a read that decides at once to answer (a refusal seen in
        what it read), in autocommit. Returns the row read (None if none) and None when it did not say
        `claim`, True when the answer was recorded, False when the key was known (nothing recorded: ask
        claim_new for what it holds)."""
        sql = self._claim_when.replace("{reading}", reading)
        row = await conn.fetchrow(
            sql, self._lock_id(api_key_id, key), api_key_id, key, request_hash, status,
            orjson.dumps(body).decode(), *reading_args,
        )  # fmt: skip
        if row is None or row["claimed"] is None:
            return row, None
        if not row["claimed"]:
            raise IdempotencyInUse()
        return row, bool(row["recorded"])

    async def lookup(
        self, conn: asyncpg.Connection, api_key_id: int, key: str, request_hash: bytes | None = None
    ) -> StoredResponse | None:
        """The response recorded for a key, read without its lock: the fast path of a replay. With
        `request_hash`, a key recorded for another request is IdempotencyReused."""
        row = await conn.fetchrow(self._select, api_key_id, key)
        if row is None:
            return None
        if request_hash is not None and bytes(row["request_hash"]) != request_hash:
            raise IdempotencyReused()
        return StoredResponse(row["status"], orjson.loads(row["body"]))

    async def finish(
        self, conn: asyncpg.Connection, api_key_id: int, key: str, status: int, body: Any
    ) -> bool:
        """Writes the final answer into a PENDING record; False if it had one already (kept as it is)."""
        result: str = await conn.execute(self._finish, api_key_id, key, status, orjson.dumps(body).decode())
        return result != "UPDATE 0"


PURGE_BATCH = 5000


async def purge_expired_keys(
    db: Database, schema: str, retention_days: int, *, batch: int = PURGE_BATCH
) -> int:
    """Deletes `{schema}.idempotency_keys` records older than the retention, `batch` rows per statement
    (each its own transaction, so several processes may purge at once); returns how many. A PENDING
    record is kept whatever its age: its operation is still running, and a replay must find it."""
    sql = (
        f"DELETE FROM {schema}.idempotency_keys WHERE ctid = ANY (ARRAY("
        f" SELECT ctid FROM {schema}.idempotency_keys"
        f" WHERE created_at < now() - make_interval(days => $1) AND status <> {PENDING} LIMIT $2))"
    )
    total = 0
    while True:
        async with db.driver() as conn:
            result: str = await conn.execute(sql, retention_days, batch)
        n = int(result.rsplit(maxsplit=1)[-1])
        total += n
        if n < batch:
            return total
