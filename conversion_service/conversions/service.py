"""Starting conversions (idempotently) and reading them.

POST /v1/conversions, in order:
1. a replay of a known Idempotency-Key answers from what is stored, at once;
2. the conversion is priced (from the quote, or at the rate in force), outside any transaction;
3. one database transaction claims the key, checks the quote (unexpired, unused) and the member's daily
   limit (a conditional upsert: no read-then-write race), inserts the conversion (state `created`, leased
   to this request) and records the key, pointing at the conversion;
4. the saga is driven inline, and the answer is the conversion's state when it stops: 201 completed,
   202 still in progress (the ledger is unreachable; recovery finishes it), or the ledger's refusal as
   problem+json (nothing moved in the end).
A replay answers with the conversion's state now: for a finished conversion that is the first answer
again, byte for byte; for one still in progress it is the newer state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from starlette.responses import Response

from conversion_service.conversions import repository
from conversion_service.conversions.saga import ConversionSaga, new_owner
from conversion_service.conversions.schemas import (
    TERMINAL_STATES,
    ConversionError,
    ConversionEvent,
    ConversionIn,
    ConversionList,
    ConversionOut,
    ConversionSummary,
)
from conversion_service.deps import Context
from conversion_service.quotes import repository as quotes
from conversion_service.quotes.schemas import AppliedRate, Pricing
from conversion_service.quotes.service import DailyLimitExceeded, price
from services.auth import Principal
from services.errors import PROBLEM_JSON, Conflict, DomainError, NotFound, Unprocessable, problem_body
from services.idempotency import (
    REPLAYED_HEADER,
    IdempotencyInUse,
    IdempotencyStore,
    canonical_json,
    fingerprint,
)
from services.pagination import decode_cursor, encode_cursor

IDEMPOTENCY = IdempotencyStore("conversion")
_POINTER = "conversion_id"


@dataclass(frozen=True)
class Plan:
    """A conversion priced and ready to insert: amounts, the applied rate, the daily limit to enforce."""

    values: dict[str, Any]
    daily_limit: int | None


def summary(row: asyncpg.Record) -> ConversionSummary:
    error = None
    if row["error_code"] is not None:
        error = ConversionError(
            status=row["error_status"], code=row["error_code"], detail=row["error_detail"]
        )
    return ConversionSummary(
        id=row["id"],
        state=row["state"],
        quote_id=row["quote_id"],
        from_program=row["from_program"],
        to_program=row["to_program"],
        member_ref=row["member_ref"],
        from_points=row["from_points"],
        fee_points=row["fee_points"],
        to_points=row["to_points"],
        rate=AppliedRate(
            source=row["rate_source"],
            version=row["rate_version"],
            from_points=row["rate_from_points"],
            to_points=row["rate_to_points"],
            fee_bps=row["fee_bps"],
        ),
        debit_transaction_id=row["debit_txn_id"],
        credit_transaction_id=row["credit_txn_id"],
        compensation_transaction_id=row["compensation_txn_id"],
        error=error,
        attempts=row["attempts"],
        next_attempt_at=None if row["state"] in TERMINAL_STATES else row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


async def _load(conn: asyncpg.Connection, conversion_id: UUID) -> ConversionOut | None:
    row = await repository.get(conn, conversion_id)
    if row is None:
        return None
    history = [ConversionEvent.model_validate(event) for event in orjson.loads(row["history"])]
    return ConversionOut(**dict(summary(row)), history=history)


def render(conversion: ConversionOut, *, replayed: bool = False) -> Response:
    """The answer of POST /v1/conversions for a conversion in this state."""
    body = conversion.model_dump(mode="json")
    headers = {"Location": f"/v1/conversions/{conversion.id}"}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    state, error = conversion.state, conversion.error
    if state == "completed":
        return Response(orjson.dumps(body), status_code=201, media_type="application/json", headers=headers)
    if state not in TERMINAL_STATES:
        return Response(orjson.dumps(body), status_code=202, media_type="application/json", headers=headers)
    assert error is not None
    if state == "rejected":
        status = error.status if error.status in (404, 422) else 502
        code, detail = (
            error.code,
            f"The ledger refused the debit of {conversion.from_program}: {error.detail}",
        )
    elif state == "compensated":
        status, code = 422, "credit_rejected"
        detail = (
            f"{conversion.to_program} refused the credit ({error.code}: {error.detail}); the debit of "
            f"{conversion.from_points} {conversion.from_program} points was reversed."
        )
    else:
        status, code = 502, "conversion_failed"
        detail = (
            f"{conversion.to_program} refused the credit ({error.code}) and the ledger refused to reverse "
            "the debit; the conversion needs an operator."
        )
    problem = problem_body(status, code, detail, extra={"conversion": body})
    return Response(orjson.dumps(problem), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _stored_problem(status: int, body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers={REPLAYED_HEADER: "true"}
    )


async def _replay(ctx: Context, status: int, body: dict[str, Any]) -> Response:
    if _POINTER not in body:  # a refusal recorded with the key
        return _stored_problem(status, body)
    conversion_id = UUID(body[_POINTER])
    async with ctx.db.driver() as conn:
        if await repository.driven_by_request(conn, conversion_id):
            raise IdempotencyInUse()  # the first request is still driving it
        conversion = await _load(conn, conversion_id)
    assert conversion is not None
    return render(conversion, replayed=True)


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
    rate, amounts = priced.rate, priced.amounts
    return Plan(
        values={
            "quote_id": None,
            "from_program": rate.from_program,
            "to_program": rate.to_program,
            "member_ref": body.member_ref,
            "from_points": amounts.from_points,
            "fee_points": amounts.fee_points,
            "to_points": amounts.to_points,
            "rate_source": rate.source,
            "rate_version": rate.version,
            "rate_from_points": rate.from_points,
            "rate_to_points": rate.to_points,
            "fee_bps": rate.fee_bps,
        },
        daily_limit=rate.daily_limit_from_points,
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
    ctx: Context, saga: ConversionSaga, principal: Principal, body: ConversionIn, key: str
) -> Response:
    request_hash = fingerprint("conversion", canonical_json(body.model_dump(mode="json")))
    async with ctx.db.driver() as conn:  # a replay answers at once, whatever pricing would say now
        known = await IDEMPOTENCY.lookup(conn, principal.key_id, key, request_hash)
    if known is not None:
        return await _replay(ctx, known.status, known.body)

    plan = await _plan(ctx, principal, body)
    conversion_id = uuid.uuid4()
    owner = new_owner("request")
    refusal: DomainError | None = None
    async with ctx.db.driver() as conn, conn.transaction():
        stored = await IDEMPOTENCY.claim(conn, principal.key_id, key, request_hash)
        if stored is None:
            try:  # every refusal comes before anything is written, so it can be recorded in this transaction
                plan = await _admit(conn, principal, plan, body)
                values = {**plan.values, "id": conversion_id, "api_key_id": principal.key_id}
                await repository.insert(conn, values, owner=owner, lease_s=ctx.settings.lease_s)
            except DomainError as exc:
                refusal = exc
                problem = problem_body(exc.status, exc.code, exc.detail, extra=exc.extra)
                await IDEMPOTENCY.record(conn, principal.key_id, key, request_hash, exc.status, problem)
            else:
                await IDEMPOTENCY.record(
                    conn, principal.key_id, key, request_hash, 202, {_POINTER: str(conversion_id)}
                )
    if stored is not None:
        return await _replay(ctx, stored.status, stored.body)
    if refusal is not None:
        raise refusal

    await saga.drive(conversion_id, owner)
    async with ctx.db.driver() as conn:
        conversion = await _load(conn, conversion_id)
    assert conversion is not None
    return render(conversion)


async def get_conversion(ctx: Context, principal: Principal, conversion_id: UUID) -> ConversionOut:
    async with ctx.db.driver() as conn:
        conversion = await _load(conn, conversion_id)
    if conversion is None:
        raise NotFound(f"No conversion with id {conversion_id}.", code="conversion_not_found")
    principal.require_program(conversion.from_program)
    principal.require_program(conversion.to_program)
    return conversion


async def list_conversions(
    ctx: Context,
    principal: Principal,
    *,
    member_ref: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> ConversionList:
    before = decode_cursor(cursor) or 2**63 - 1
    async with ctx.db.driver() as conn:
        rows = await repository.list_conversions(
            conn,
            before=before,
            member_ref=member_ref,
            state=state,
            programs=principal.program_list(),
            limit=limit + 1,
        )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
    return ConversionList(data=[summary(r) for r in page], next_cursor=next_cursor)
