"""Starting conversions (idempotently) and reading them.

POST /v1/conversions, in order:
1. a replay of a known Idempotency-Key answers from what is stored, at once (services.saga.SagaRunner);
2. the conversion is priced (from the quote, or at the rate in force), outside any transaction;
3. one database transaction claims the key and records it pending, checks the quote (unexpired, unused)
   and the member's daily limit (a conditional upsert: no read-then-write race), and inserts the
   conversion (status `created`, leased to this request); a refusal found there is the key's answer;
4. the saga is driven inline, and the answer is where it stops: 201 completed (written into the key's
   record by the transition that completed it), 202 still in progress (the ledger is unreachable; it is
   retried in the background), or the ledger's refusal as problem+json (nothing moved in the end).
A replay of a finished conversion is its final answer, byte for byte; of one still in progress, where it
stands now (a client that got 202 replays to learn the outcome).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from starlette.responses import Response

from conversion_service.conversions import repository
from conversion_service.conversions.saga import load, summary
from conversion_service.conversions.schemas import ConversionIn, ConversionList, ConversionOut
from conversion_service.deps import Context
from conversion_service.quotes import repository as quotes
from conversion_service.quotes.schemas import Pricing
from conversion_service.quotes.service import DailyLimitExceeded, price
from services.auth import Principal
from services.errors import Conflict, NotFound, Unprocessable
from services.idempotency import canonical_json, fingerprint
from services.pagination import decode_cursor, page_of
from services.saga import Operation, SagaRunner


@dataclass(frozen=True)
class Plan:
    """A conversion priced and ready to insert: amounts, the applied rate, the daily limit to enforce."""

    values: dict[str, Any]
    daily_limit: int | None


async def _plan(ctx: Context, principal: Principal, body: ConversionIn) -> Plan | None:
    """Prices a conversion by fields (None for one by quote: the quote is read under its lock)."""
    if body.quote_id is not None:
        return None
    assert body.from_program and body.to_program and body.member_ref
    pricing = Pricing(
        from_program=body.from_program,
        to_program=body.to_program,
        member_ref=body.member_ref,
        from_points=body.from_points,
        to_points=body.to_points,
    )
    priced = await price(ctx, principal, pricing)
    return Plan(
        values={"quote_id": None, **priced.columns(body.member_ref)},
        daily_limit=priced.rate.daily_limit_from_points,
    )


async def _plan_from_quote(conn: asyncpg.Connection, principal: Principal, quote_id: UUID) -> Plan:
    quote = await quotes.lock(conn, quote_id)
    if quote is None:
        raise NotFound(f"No quote with id {quote_id}.", code="quote_not_found")
    principal.require_program(quote["from_program"])
    principal.require_program(quote["to_program"])
    if quote["expired"]:
        raise Unprocessable(
            f"Quote {quote_id} expired at {quote['expires_at'].isoformat()}; ask for a new one.",
            code="quote_expired",
        )
    if await repository.quote_used(conn, quote_id):
        raise Conflict(f"Quote {quote_id} was already used by another conversion.", code="quote_used")
    keys = (
        "from_program", "to_program", "member_ref", "from_points", "fee_points", "to_points",
        "rate_source", "rate_version", "rate_from_points", "rate_to_points", "fee_bps",
    )  # fmt: skip
    return Plan(
        values={"quote_id": quote_id, **{k: quote[k] for k in keys}},
        daily_limit=quote["daily_limit_from_points"],
    )


async def _admit(
    conn: asyncpg.Connection, principal: Principal, plan: Plan | None, body: ConversionIn
) -> Plan:
    """Inside the creating transaction: the quote's checks and the daily limit (raises a refusal)."""
    if plan is None:
        assert body.quote_id is not None
        plan = await _plan_from_quote(conn, principal, body.quote_id)
    v = plan.values
    limit_day = None
    if plan.daily_limit is not None:
        limit_day = await repository.consume_daily(
            conn, v["from_program"], v["to_program"], v["member_ref"], v["from_points"], plan.daily_limit
        )
        if limit_day is None:
            used = await repository.used_today(conn, v["from_program"], v["to_program"], v["member_ref"])
            raise DailyLimitExceeded(
                f"Member {v['member_ref']} has converted {used} of at most {plan.daily_limit} "
                f"{v['from_program']} points to {v['to_program']} today (UTC); {v['from_points']} more "
                "would pass the limit.",
                extra={"daily_limit_from_points": plan.daily_limit, "used_today": used},
            )
    plan.values["limit_day"] = limit_day
    return plan


async def create_conversion(
    ctx: Context, saga: SagaRunner, principal: Principal, body: ConversionIn, key: str
) -> Response:
    request_hash = fingerprint("conversion", canonical_json(body.model_dump(mode="json")))
    known = await saga.replay_known(principal.key_id, key, request_hash)  # whatever pricing says now
    if known is not None:
        return known.response()
    plan = await _plan(ctx, principal, body)
    conversion_id = uuid.uuid4()

    async def create(conn: asyncpg.Connection) -> asyncpg.Record:
        # every refusal comes before anything is written, so no savepoint is needed
        admitted = await _admit(conn, principal, plan, body)
        values = {
            **admitted.values,
            "id": conversion_id,
            "api_key_id": principal.key_id,
            "idempotency_key": key,
        }
        return await repository.insert(conn, values, lease_s=saga.lease_s)

    answer = await saga.start(Operation(principal.key_id, key, request_hash, conversion_id), create)
    return answer.response()


async def get_conversion(ctx: Context, principal: Principal, conversion_id: UUID) -> ConversionOut:
    async with ctx.db.driver() as conn:
        conversion = await load(conn, conversion_id)
    if conversion is None:
        raise NotFound(f"No conversion with id {conversion_id}.", code="conversion_not_found")
    principal.require_program(conversion.from_program)
    principal.require_program(conversion.to_program)
    return conversion


async def retry_conversion(
    ctx: Context, saga: SagaRunner, principal: Principal, conversion_id: UUID
) -> ConversionOut:
    return await saga.retry_for(
        conversion_id, lambda: get_conversion(ctx, principal, conversion_id), "conversion"
    )


async def list_conversions(
    ctx: Context,
    principal: Principal,
    *,
    member_ref: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> ConversionList:
    before = decode_cursor(cursor) or 2**63 - 1
    async with ctx.db.driver() as conn:
        rows = await repository.list_conversions(
            conn,
            before=before,
            member_ref=member_ref,
            status=status,
            programs=principal.program_list(),
            limit=limit + 1,
        )
    page, next_cursor = page_of(rows, limit, "seq")
    return ConversionList(data=[summary(r) for r in page], next_cursor=next_cursor)
