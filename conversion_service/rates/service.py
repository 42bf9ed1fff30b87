"""Rates: publishing versions, and finding the rate in force for a pair (direct, else derived)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import asyncpg

from conversion_service import ledger
from conversion_service.arithmetic import Terms, from_points_for
from conversion_service.deps import Context
from conversion_service.programs.service import settings_of
from conversion_service.rates import repository
from conversion_service.rates.schemas import CashValue, DerivedFrom, RateIn, RateList, RateOut
from conversion_service.schemas_common import MAX_POINTS
from services.auth import Principal
from services.errors import NotFound, Unprocessable
from services.pagination import decode_cursor, page_of

MAX_CLOCK_SKEW = timedelta(minutes=5)


class NoRate(Unprocessable):
    code = "no_rate"


def same_program_check(from_program: str, to_program: str) -> None:
    if from_program == to_program:
        raise Unprocessable("Points convert between two different programs.", code="same_program")


def _out(row: asyncpg.Record) -> RateOut:
    return RateOut.model_validate({**dict(row), "source": "direct"})


async def put_rate(
    ctx: Context, principal: Principal, from_program: str, to_program: str, body: RateIn
) -> RateOut:
    same_program_check(from_program, to_program)
    if body.effective_from is not None and body.effective_from < datetime.now(UTC) - MAX_CLOCK_SKEW:
        raise Unprocessable(
            "effective_from is in the past; a rate in force is never rewritten. Omit it to mean now.",
            code="effective_from_in_past",
        )
    for code in (from_program, to_program):
        await ledger.program(ctx.ledger, code, ttl_s=ctx.settings.program_cache_s)
    async with ctx.db.driver() as conn:
        row = await repository.insert(
            conn,
            from_program=from_program,
            to_program=to_program,
            from_points=body.from_points,
            to_points=body.to_points,
            fee_bps=body.fee_bps,
            min_from_points=body.min_from_points,
            daily_limit_from_points=body.daily_limit_from_points,
            effective_from=body.effective_from,
            api_key_id=principal.key_id,
        )
    return _out(row)


async def _direct(ctx: Context, from_program: str, to_program: str, at: datetime | None) -> RateOut | None:
    """The published rate between the two in force at `at` (default now), if any."""
    async with ctx.db.driver() as conn:
        row = await repository.in_force(conn, from_program, to_program, at)
    return None if row is None else _out(row)


async def rate_in_force(
    ctx: Context, from_program: str, to_program: str, *, at: datetime | None = None
) -> RateOut:
    """The direct rate in force at `at` (default now), else a derived one; NoRate if neither."""
    same_program_check(from_program, to_program)
    direct = await _direct(ctx, from_program, to_program, at)
    return direct if direct is not None else await derived_rate(ctx, from_program, to_program)


async def derived_rate(ctx: Context, from_program: str, to_program: str) -> RateOut:
    """A rate through the programs' cash values: 1 source point is worth cash_minor / points of the
    currency, so `src.points * dst.cash_minor` source points buy `src.cash_minor * dst.points` target points
    (reduced). Only when both programs allow derived rates and value points in the same currency."""
    ttl = ctx.settings.program_cache_s
    src = await ledger.program(ctx.ledger, from_program, ttl_s=ttl)
    dst = await ledger.program(ctx.ledger, to_program, ttl_s=ttl)
    policy = await settings_of(ctx, [from_program, to_program])
    refusing = [p for p in (from_program, to_program) if not policy[p].allow_derived_rates]
    if refusing:
        raise NoRate(
            f"No rate from {from_program} to {to_program} is published, and {' and '.join(refusing)} "
            "does not allow rates derived from cash values."
        )
    if src.currency != dst.currency:
        raise NoRate(
            f"No rate from {from_program} to {to_program} is published, and their cash values are in "
            f"different currencies ({src.currency}, {dst.currency})."
        )
    if src.cash_minor == 0 or dst.cash_minor == 0:
        raise NoRate(
            f"No rate from {from_program} to {to_program} is published, and a program without cash value "
            "cannot take part in a derived rate."
        )
    from_points = src.cash_points * dst.cash_minor
    to_points = src.cash_minor * dst.cash_points
    divisor = math.gcd(from_points, to_points)
    from_points, to_points = from_points // divisor, to_points // divisor
    if from_points > MAX_POINTS or to_points > MAX_POINTS:
        raise NoRate(f"The cash values of {from_program} and {to_program} give no 64-bit rate.")
    fee_bps = max(policy[from_program].derived_fee_bps, policy[to_program].derived_fee_bps)
    terms = Terms(from_points, to_points, fee_bps)
    return RateOut(
        from_program=from_program,
        to_program=to_program,
        source="derived",
        version=None,
        from_points=from_points,
        to_points=to_points,
        fee_bps=fee_bps,
        min_from_points=min(from_points_for(1, terms), MAX_POINTS),
        daily_limit_from_points=None,
        derived_from=DerivedFrom(
            from_cash_value=CashValue(
                points=src.cash_points, cash_minor=src.cash_minor, currency=src.currency
            ),
            to_cash_value=CashValue(points=dst.cash_points, cash_minor=dst.cash_minor, currency=dst.currency),
        ),
    )


async def get_rate(ctx: Context, from_program: str, to_program: str, at: datetime | None) -> RateOut:
    try:
        if at is not None:  # derived rates follow today's cash values; only direct ones have a history
            same_program_check(from_program, to_program)
            direct = await _direct(ctx, from_program, to_program, at)
            if direct is not None:
                return direct
        return await rate_in_force(ctx, from_program, to_program)
    except NoRate as exc:
        raise NotFound(exc.detail, code="rate_not_found") from None


async def list_rates(
    ctx: Context,
    principal: Principal,
    *,
    at: datetime | None,
    from_program: str | None,
    to_program: str | None,
    limit: int,
    cursor: str | None,
) -> RateList:
    after = decode_cursor(cursor) or 0
    async with ctx.db.driver() as conn:
        rows = await repository.list_in_force(
            conn,
            at=at,
            after=after,
            limit=limit + 1,
            from_program=from_program,
            to_program=to_program,
            programs=principal.program_list(),
        )
    page, next_cursor = page_of(rows, limit, "pair_id")
    return RateList(data=[_out(r) for r in page], next_cursor=next_cursor)


async def list_versions(
    ctx: Context, from_program: str, to_program: str, *, limit: int, cursor: str | None
) -> RateList:
    before = decode_cursor(cursor) or 2**31 - 1
    async with ctx.db.driver() as conn:
        rows = await repository.versions(conn, from_program, to_program, before=before, limit=limit + 1)
    page, next_cursor = page_of(rows, limit, "version")
    return RateList(data=[_out(r) for r in page], next_cursor=next_cursor)
