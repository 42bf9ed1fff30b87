"""Redemptions: reserve (one transaction with the Idempotency-Key record), then drive the saga inline
and answer with where it ended; cancel; reads.

Idempotency: the key is recorded in the transaction that creates the redemption (or starts the cancel),
first as pending (status 0, never sent); the saga writes the final answer into that record in the
transaction that ends it. A replay returns the final answer; a replay of a pending record whose saga
lost its process drives the saga first; one whose saga is still being driven gets `409
idempotency_key_in_use`. A refusal (unknown or inactive reward, out of stock, over the limit) rolls the
reservation back to a savepoint and is recorded and replayed like a success.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import asyncpg

from catalog_service.common import Answer, problem
from catalog_service.metrics import REDEMPTIONS
from catalog_service.redemptions import repository
from catalog_service.redemptions.repository import PENDING
from catalog_service.redemptions.saga import RedemptionSaga
from catalog_service.redemptions.schemas import (
    CancelIn,
    RedemptionDetail,
    RedemptionEvent,
    RedemptionIn,
    RedemptionList,
    RedemptionOut,
    redemption_json,
    redemption_out,
)
from services.auth import Principal
from services.db import Database
from services.errors import Forbidden, NotFound
from services.idempotency import (
    IdempotencyInUse,
    IdempotencyStore,
    StoredResponse,
    canonical_json,
    fingerprint,
)
from services.pagination import decode_cursor, encode_cursor

IDEMPOTENCY = IdempotencyStore("catalog")
NO_CURSOR = 2**63 - 1


class Refusal(Exception):
    """A redemption refused while reserving: everything reserved so far is rolled back to the savepoint."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.answer = Answer(status, problem(status, code, detail))


def can_see_codes(principal: Principal, row: asyncpg.Record) -> bool:
    return principal.key_id == row["api_key_id"] or "catalog:admin" in principal.scopes


def _not_found(redemption_id: UUID) -> NotFound:
    return NotFound(f"No redemption with id {redemption_id}.", code="redemption_not_found")


# --- redeem -------------------------------------------------------------------------------------------


async def _reserve(
    conn: asyncpg.Connection,
    redemption_id: UUID,
    body: RedemptionIn,
    principal: Principal,
    key: str,
    request_hash: bytes,
    lease_s: float,
) -> asyncpg.Record:
    """Every reservation of a redemption, in one transaction with its pending Idempotency-Key record.

    The reward's row (the hot lock of a limited reward) is taken last, so it is held only for the stock
    decrement, the code claim and the COMMIT. Codes are claimed after the stock is taken: a request that
    loses on stock never holds a code another request could have had."""
    reward = await repository.reward_for_redemption(conn, body.sku)
    if reward is None:
        raise Refusal(404, "reward_not_found", f"No reward with sku {body.sku}.")
    if reward["program"] != body.program:
        raise Refusal(
            422,
            "program_mismatch",
            f"Reward {body.sku} is redeemed with {reward['program']} points, not {body.program}.",
        )
    if not reward["active"]:
        raise Refusal(422, "reward_not_active", f"Reward {body.sku} is outside its active window.")
    limit: int | None = reward["per_member_limit"]
    if limit is not None and body.quantity > limit:
        raise Refusal(
            422, "limit_exceeded", f"Reward {body.sku} allows {limit} per member; {body.quantity} requested."
        )
    if reward["stock"] is not None and reward["stock"] < body.quantity:  # no lock needed to see it is short
        raise Refusal(409, "out_of_stock", f"Reward {body.sku} has fewer than {body.quantity} left.")
    if not await repository.take_allowance(conn, reward["id"], body.member_ref, body.quantity, limit):
        raise Refusal(
            422,
            "limit_exceeded",
            f"Member {body.member_ref} would hold more than {limit} of reward {body.sku}.",
        )
    limited = reward["stock"] is not None
    row = await repository.insert(
        conn,
        {
            "id": redemption_id,
            "reward_id": reward["id"],
            "sku": reward["sku"],
            "reward_type": reward["type"],
            "program": reward["program"],
            "member_ref": body.member_ref,
            "quantity": body.quantity,
            "points": reward["price_points"] * body.quantity,
            "cash_minor": None
            if reward["cash_price_minor"] is None
            else reward["cash_price_minor"] * body.quantity,
            "currency": reward["currency"],
            "stock_taken": body.quantity if limited else 0,
            "api_key_id": principal.key_id,
            "idempotency_key": key,
        },
        lease_s=lease_s,
    )
    pending = {"redemption_id": str(redemption_id)}
    await IDEMPOTENCY.record(conn, principal.key_id, key, request_hash, PENDING, pending)
    if limited and not await repository.take_stock(conn, reward["id"], body.quantity):
        raise Refusal(409, "out_of_stock", f"Reward {body.sku} has fewer than {body.quantity} left.")
    if reward["type"] == "voucher":
        claimed = await repository.claim_codes(conn, reward["id"], body.quantity, redemption_id)
        if claimed < body.quantity:
            raise Refusal(
                409, "out_of_stock", f"Reward {body.sku} has fewer than {body.quantity} codes left."
            )
    return row


async def redeem(
    db: Database, saga: RedemptionSaga, principal: Principal, body: RedemptionIn, key: str
) -> Answer:
    principal.require_program(body.program)
    request_hash = fingerprint("redemption", canonical_json(body.model_dump(mode="json")))
    redemption_id = uuid4()
    async with db.driver() as conn, conn.transaction():
        stored = await IDEMPOTENCY.claim(conn, principal.key_id, key, request_hash)
        if stored is None:
            await repository.savepoint(conn)  # a refusal undoes every reservation, keeps the key's lock
            try:
                row = await _reserve(conn, redemption_id, body, principal, key, request_hash, saga.lease_s)
            except Refusal as refusal:
                await repository.rollback_to_savepoint(conn)
                answer = refusal.answer
                await IDEMPOTENCY.record(
                    conn, principal.key_id, key, request_hash, answer.status, answer.body
                )
                REDEMPTIONS.labels(refusal.code).inc()
                return answer
    if stored is not None:
        return await _replay(db, saga, principal, key, stored)
    driven = await saga.drive(redemption_id, row)
    # None: another driver ended it (or is ending it); answer with what it recorded
    answer = driven or await _settled(db, principal, key, redemption_id, replayed=False)
    REDEMPTIONS.labels(_outcome(answer)).inc()
    return answer


def _outcome(answer: Answer) -> str:
    if answer.status >= 400:
        return str(answer.body.get("code", answer.status))
    return str(answer.body.get("status", answer.status))


async def _replay(
    db: Database, saga: RedemptionSaga, principal: Principal, key: str, stored: StoredResponse
) -> Answer:
    if stored.status != PENDING:
        return Answer(stored.status, stored.body, replayed=True)
    # The first request's saga has not ended: still being driven (in use), or its process died.
    redemption_id = UUID(stored.body["redemption_id"])
    if not await saga.claim_and_drive(redemption_id):
        raise IdempotencyInUse()
    answer = await _settled(db, principal, key, redemption_id, replayed=True)
    if answer.status == 202:
        raise IdempotencyInUse()
    return answer


async def _settled(
    db: Database,
    principal: Principal,
    key: str,
    redemption_id: UUID,
    *,
    replayed: bool,
    record_if_pending: bool = False,
) -> Answer:
    """The final answer recorded for `key`; if there is none yet, 202 with the redemption as it stands
    (recorded as the final answer when `record_if_pending`)."""
    async with db.driver() as conn, conn.transaction():
        stored = await IDEMPOTENCY.lookup(conn, principal.key_id, key)
        if stored is not None and stored.status != PENDING:
            return Answer(stored.status, stored.body, replayed=replayed)
        row = await repository.get(conn, redemption_id)
        assert row is not None
        codes = (await repository.codes_of(conn, [redemption_id])).get(redemption_id, [])
        body = redemption_json(row, codes)
        if record_if_pending:
            await repository.record_final(conn, principal.key_id, key, 202, body)
    return Answer(202, body, replayed=replayed)


# --- cancel -------------------------------------------------------------------------------------------


async def cancel(
    db: Database,
    saga: RedemptionSaga,
    principal: Principal,
    redemption_id: UUID,
    body: CancelIn,
    key: str,
) -> Answer:
    payload: dict[str, Any] = {"redemption_id": str(redemption_id), **body.model_dump(exclude_none=True)}
    request_hash = fingerprint("cancel", canonical_json(payload))
    async with db.driver() as conn, conn.transaction():
        stored = await IDEMPOTENCY.claim(conn, principal.key_id, key, request_hash)
        if stored is None:
            row = await repository.lock(conn, redemption_id)
            if row is None:
                raise _not_found(redemption_id)
            principal.require_program(row["program"])
            if not can_see_codes(principal, row):
                raise Forbidden(
                    "Only the API key that made a redemption, or a catalog:admin key, may cancel it.",
                    code="not_redeemer",
                )
            if row["status"] != "fulfilled":
                answer = Answer(
                    409,
                    problem(
                        409,
                        "not_cancellable",
                        f"Redemption {redemption_id} is {row['status']}; only a fulfilled one can be "
                        "cancelled.",
                        redemption_id=str(redemption_id),
                        status_now=row["status"],
                    ),
                )
                await IDEMPOTENCY.record(
                    conn, principal.key_id, key, request_hash, answer.status, answer.body
                )
                return answer
            await repository.void_codes(conn, redemption_id)
            await repository.start_cancel(conn, redemption_id, principal.key_id, key, lease_s=saga.lease_s)
            await repository.add_event(
                conn,
                redemption_id,
                "cancelling",
                "cancel_requested",
                {"reason": body.reason, "api_key_id": principal.key_id},
            )
            pending = {"redemption_id": str(redemption_id)}
            await IDEMPOTENCY.record(conn, principal.key_id, key, request_hash, PENDING, pending)
    if stored is not None:
        return await _replay(db, saga, principal, key, stored)
    driven = await saga.drive(redemption_id)
    # None: not refunded yet (the ledger is unreachable); 202, the cancel completes on its own
    answer = driven or await _settled(
        db, principal, key, redemption_id, replayed=False, record_if_pending=True
    )
    REDEMPTIONS.labels("cancelled" if answer.status == 200 else "cancel_pending").inc()
    return answer


# --- reads --------------------------------------------------------------------------------------------


async def get(db: Database, principal: Principal, redemption_id: UUID) -> RedemptionDetail:
    async with db.driver() as conn:
        row = await repository.get(conn, redemption_id)
        if row is None:
            raise _not_found(redemption_id)
        principal.require_program(row["program"])
        codes = None
        if can_see_codes(principal, row):
            codes = (await repository.codes_of(conn, [redemption_id])).get(redemption_id, [])
        events = await repository.events(conn, redemption_id)
    out = redemption_out(row, codes)
    return RedemptionDetail(**out.model_dump(), events=[RedemptionEvent.model_validate(e) for e in events])


async def list_for_member(
    db: Database,
    principal: Principal,
    member_ref: str,
    *,
    program: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> RedemptionList:
    before = decode_cursor(cursor) or NO_CURSOR
    if program is not None:
        principal.require_program(program)
    async with db.driver() as conn:
        rows = await repository.list_for_member(
            conn,
            member_ref,
            before=before,
            limit=limit + 1,
            program=program,
            status=status,
            programs=principal.program_list(),
        )
        page = rows[:limit]
        visible = [r["id"] for r in page if can_see_codes(principal, r)]
        codes = await repository.codes_of(conn, visible)
    data: list[RedemptionOut] = [
        redemption_out(r, codes.get(r["id"], []) if can_see_codes(principal, r) else None) for r in page
    ]
    return RedemptionList(
        data=data, next_cursor=encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
    )
