"""Redemptions: reserve (one transaction with the Idempotency-Key record), then drive the saga inline
and answer with where it ended; cancel; reads.

Both operations go through the shared saga runner (services/saga.py): the key is recorded pending in
the transaction that reserves the redemption (or starts the cancel), and the saga writes the final
answer into that record in the transaction that settles it. A replay returns the final answer; a
replay of a pending record whose saga lost its process drives the saga first; one whose saga is still
being driven gets `409 idempotency_key_in_use`. A refusal is recorded and replayed like a success: one the
reward alone shows (unknown or inactive, sold out, more than a member may hold) before anything is
reserved, in one statement with the key; one found while reserving (the member's allowance, the last
codes or units taken meanwhile) has written nothing, or is rolled back (the stock), and is recorded then.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import asyncpg

from catalog_service.metrics import REDEMPTIONS
from catalog_service.redemptions import repository
from catalog_service.redemptions.schemas import (
    CancelIn,
    RedemptionDetail,
    RedemptionEvent,
    RedemptionIn,
    RedemptionList,
    RedemptionOut,
    redemption_out,
)
from services.auth import Principal
from services.db import Database
from services.errors import Conflict, DomainError, Forbidden, NotFound
from services.idempotency import canonical_json, fingerprint
from services.pagination import decode_cursor, page_of
from services.saga import Answer, CommitWith, Operation, SagaRunner

NO_CURSOR = 2**63 - 1


def _refusal(status: int, code: str, detail: str) -> DomainError:
    """A redemption refused while reserving: everything reserved so far is rolled back to the savepoint."""
    return DomainError(detail, status=status, code=code)


def can_see_codes(principal: Principal, row: asyncpg.Record) -> bool:
    return principal.key_id == row["api_key_id"] or "catalog:admin" in principal.scopes


def _not_found(redemption_id: UUID) -> NotFound:
    return NotFound(f"No redemption with id {redemption_id}.", code="redemption_not_found")


# --- redeem -------------------------------------------------------------------------------------------


def _refused_at_sight(reward: asyncpg.Record | None, body: RedemptionIn) -> DomainError | None:
    """What the reward alone refuses, read without a lock before anything is written: the refusal is
    then recorded with the key in one statement (SagaRunner.start's `screen`), on one connection. When a
    flash sale has sold out, a request that comes too late costs two statements and never reaches the
    reward's row lock."""
    if reward is None:
        return _refusal(404, "reward_not_found", f"No reward with sku {body.sku}.")
    if reward["program"] != body.program:
        return _refusal(
            422,
            "program_mismatch",
            f"Reward {body.sku} is redeemed with {reward['program']} points, not {body.program}.",
        )
    if not reward["active"]:
        return _refusal(422, "reward_not_active", f"Reward {body.sku} is outside its active window.")
    limit: int | None = reward["per_member_limit"]
    if limit is not None and body.quantity > limit:
        return _refusal(
            422, "limit_exceeded", f"Reward {body.sku} allows {limit} per member; {body.quantity} requested."
        )
    if reward["stock"] is not None and reward["stock"] < body.quantity:
        return _out_of_stock(body.sku, body.quantity)
    return None


async def _reserve(
    conn: asyncpg.Connection,
    reward: asyncpg.Record,
    redemption_id: UUID,
    body: RedemptionIn,
    principal: Principal,
    key: str,
    lease_s: float,
) -> asyncpg.Record:
    """Every reservation of a redemption, in the transaction that records its Idempotency-Key pending
    (the reward as read just before it, outside: nothing here depends on reading it again inside).

    One statement (repository.reserve): the codes, claimed with SKIP LOCKED so concurrent claims never
    wait for each other, the member's allowance and the redemption row; a refusal writes nothing. The
    reward's row (the hot lock of a limited reward) is taken last, by the statement sent with the COMMIT
    (_take_stock), so it is held for no round trip to this process: a statement sent while it is held
    would wait for this process's event loop as well as for PostgreSQL, and in a flash sale the requests
    queued on that lock were the whole latency. A request that then loses on stock gives its codes back
    with its rollback."""
    limit: int | None = reward["per_member_limit"]
    limited = reward["stock"] is not None
    row, refused = await repository.reserve(
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
        limit=limit,
        voucher=reward["type"] == "voucher",
        lease_s=lease_s,
    )
    if refused == "limit_exceeded":
        raise _refusal(
            422,
            "limit_exceeded",
            f"Member {body.member_ref} would hold more than {limit} of reward {body.sku}.",
        )
    if row is None:
        raise _refusal(409, "out_of_stock", f"Reward {body.sku} has fewer than {body.quantity} codes left.")
    return row  # the stock itself is taken by the statement sent with the COMMIT (_take_stock)


def _out_of_stock(sku: str, quantity: int) -> DomainError:
    return _refusal(409, "out_of_stock", f"Reward {sku} has fewer than {quantity} left.")


def _take_stock(row: asyncpg.Record) -> CommitWith | None:
    """A limited reward's units, taken by the reservation's last statement, sent with its COMMIT: the
    reward's row (every redemption of the reward wants its lock) is then held for no round trip to this
    process. Stock never goes below zero (a CHECK): a request that finds too little is refused."""
    if not row["stock_taken"]:
        return None

    def refusal(exc: asyncpg.PostgresError) -> DomainError | None:
        if repository.is_stock_exhausted(exc):
            return _out_of_stock(row["sku"], row["quantity"])
        return None

    return CommitWith(repository.take_stock_sql(row["reward_id"], row["stock_taken"]), refusal)


async def redeem(
    db: Database, saga: SagaRunner, principal: Principal, body: RedemptionIn, key: str
) -> Answer:
    principal.require_program(body.program)
    request_hash = fingerprint("redemption", canonical_json(body.model_dump(mode="json")))
    redemption_id = uuid4()

    reward: asyncpg.Record | None = None
    op = Operation(principal.key_id, key, request_hash, redemption_id)
    sold_out = Answer.problem(_out_of_stock(body.sku, body.quantity))

    async def screen(conn: asyncpg.Connection) -> DomainError | Answer | None:
        # Once a flash sale has sold out, most requests are this refusal: recorded by the statement that
        # reads the reward, one round trip. A known key is answered through the runner (its replay).
        nonlocal reward
        reward, recorded = await repository.reward_or_sold_out(
            conn, saga.store, op, body.sku, body.program, body.quantity, sold_out
        )
        return sold_out if recorded else _refused_at_sight(reward, body)

    async def reserve(conn: asyncpg.Connection) -> asyncpg.Record:
        assert reward is not None  # _refused_at_sight refuses an unknown reward
        return await _reserve(conn, reward, redemption_id, body, principal, key, saga.lease_s)

    # no savepoint: a refusal found while reserving has written nothing (repository.reserve)
    answer = await saga.start(op, reserve, last=_take_stock, screen=screen)
    if not answer.replayed:
        REDEMPTIONS.labels(_outcome(answer)).inc()
    return answer


def _outcome(answer: Answer) -> str:
    if answer.status >= 400:
        return str(answer.body.get("code", answer.status))
    return str(answer.body.get("status", answer.status))


# --- cancel -------------------------------------------------------------------------------------------


async def cancel(
    db: Database,
    saga: SagaRunner,
    principal: Principal,
    redemption_id: UUID,
    body: CancelIn,
    key: str,
) -> Answer:
    payload: dict[str, Any] = {"redemption_id": str(redemption_id), **body.model_dump(exclude_none=True)}
    request_hash = fingerprint("cancel", canonical_json(payload))

    async def start_cancel(conn: asyncpg.Connection) -> asyncpg.Record:
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
            raise Conflict(
                f"Redemption {redemption_id} is {row['status']}; only a fulfilled one can be cancelled.",
                code="not_cancellable",
                extra={"redemption_id": str(redemption_id), "status_now": row["status"]},
            )
        await repository.void_codes(conn, redemption_id)
        started = await repository.start_cancel(
            conn, redemption_id, principal.key_id, key, lease_s=saga.lease_s
        )
        detail = {"reason": body.reason, "api_key_id": principal.key_id}
        await repository.add_event(conn, redemption_id, "cancelling", "cancel_requested", detail)
        return started

    # Not refunded yet (the ledger is unreachable): 202, recorded as the key's answer; the cancel
    # completes on its own.
    op = Operation(principal.key_id, key, request_hash, redemption_id)
    answer = await saga.start(op, start_cancel, keep_interim=True)
    if not answer.replayed:
        outcome = {200: "cancelled", 202: "cancel_pending"}.get(answer.status) or _outcome(answer)
        REDEMPTIONS.labels(outcome).inc()
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


async def retry(
    db: Database, saga: SagaRunner, principal: Principal, redemption_id: UUID
) -> RedemptionDetail:
    return await saga.retry_for(redemption_id, lambda: get(db, principal, redemption_id), "redemption")


async def list_for_member(
    db: Database,
    principal: Principal,
    member_ref: str | None,
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
        page, next_cursor = page_of(rows, limit, "seq")
        visible = [r["id"] for r in page if can_see_codes(principal, r)]
        codes = await repository.codes_of(conn, visible)
    data: list[RedemptionOut] = [
        redemption_out(r, codes.get(r["id"], []) if can_see_codes(principal, r) else None) for r in page
    ]
    return RedemptionList(data=data, next_cursor=next_cursor)
