"""Pricing a conversion (by from_points or by the wished to_points) and keeping it as a quote."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from conversion_service.arithmetic import Amounts, convert, fits, from_points_for
from conversion_service.deps import Context
from conversion_service.quotes import repository
from conversion_service.quotes.schemas import Pricing, QuoteIn, QuoteOut, QuoteRate, applied_rate
from conversion_service.rates.schemas import RateOut
from conversion_service.rates.service import rate_in_force
from conversion_service.schemas_common import MAX_POINTS
from services.auth import Principal
from services.errors import NotFound, Unprocessable


class DailyLimitExceeded(Unprocessable):
    code = "daily_limit_exceeded"


@dataclass(frozen=True)
class Priced:
    rate: RateOut
    amounts: Amounts

    def columns(self, member_ref: str) -> dict[str, object]:
        """What a quote and a conversion both store of a price: the pair, the member, amounts, the rate."""
        rate, amounts = self.rate, self.amounts
        return {
            "from_program": rate.from_program,
            "to_program": rate.to_program,
            "member_ref": member_ref,
            "from_points": amounts.from_points,
            "fee_points": amounts.fee_points,
            "to_points": amounts.to_points,
            "rate_source": rate.source,
            "rate_version": rate.version,
            "rate_from_points": rate.from_points,
            "rate_to_points": rate.to_points,
            "fee_bps": rate.fee_bps,
        }


def out_of_range() -> Unprocessable:
    return Unprocessable("The amount is outside the 64-bit integer range.", code="points_out_of_range")


def amounts_for(rate: RateOut, from_points: int | None, to_points: int | None) -> Amounts:
    """The amounts at `rate`, with every check a client can act on (DESIGN §5 arithmetic)."""
    terms = rate.terms()
    if from_points is None:
        assert to_points is not None
        from_points = from_points_for(to_points, terms)
        if not fits(from_points):
            raise out_of_range()
    amounts = convert(from_points, terms)
    if amounts.from_points < rate.min_from_points:
        raise Unprocessable(
            f"At least {rate.min_from_points} {rate.from_program} points convert at a time; "
            f"{amounts.from_points} requested.",
            code="below_minimum",
            extra={"min_from_points": rate.min_from_points},
        )
    if amounts.to_points == 0:
        smallest = from_points_for(1, terms)
        raise Unprocessable(
            f"{amounts.from_points} {rate.from_program} points buy no whole {rate.to_program} point; "
            f"convert at least {smallest}.",
            code="amount_too_small",
            extra={"min_from_points": min(smallest, MAX_POINTS)},
        )
    if not fits(amounts.to_points):
        raise out_of_range()
    limit = rate.daily_limit_from_points
    if limit is not None and amounts.from_points > limit:
        raise DailyLimitExceeded(
            f"At most {limit} {rate.from_program} points convert to {rate.to_program} per member per day; "
            f"{amounts.from_points} requested.",
            extra={"daily_limit_from_points": limit},
        )
    return amounts


async def price(ctx: Context, principal: Principal, body: Pricing) -> Priced:
    principal.require_program(body.from_program)
    principal.require_program(body.to_program)
    rate = await rate_in_force(ctx, body.from_program, body.to_program)
    return Priced(rate, amounts_for(rate, body.from_points, body.to_points))


def quote_out(row: asyncpg.Record) -> QuoteOut:
    return QuoteOut(
        id=row["id"],
        from_program=row["from_program"],
        to_program=row["to_program"],
        member_ref=row["member_ref"],
        from_points=row["from_points"],
        fee_points=row["fee_points"],
        to_points=row["to_points"],
        rate=QuoteRate(
            **applied_rate(row),
            min_from_points=row["min_from_points"],
            daily_limit_from_points=row["daily_limit_from_points"],
        ),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
    )


async def create_quote(ctx: Context, principal: Principal, body: QuoteIn) -> QuoteOut:
    priced = await price(ctx, principal, body)
    rate = priced.rate
    ttl = min(body.expires_in_s or ctx.settings.quote_ttl_s, ctx.settings.quote_ttl_s)
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        **priced.columns(body.member_ref),
        "min_from_points": rate.min_from_points,
        "daily_limit_from_points": rate.daily_limit_from_points,
        "api_key_id": principal.key_id,
    }
    async with ctx.db.driver() as conn:
        row = await repository.insert(conn, values, ttl)
    return quote_out(row)


async def get_quote(ctx: Context, principal: Principal, quote_id: UUID) -> QuoteOut:
    async with ctx.db.driver() as conn:
        row = await repository.get(conn, quote_id)
    if row is None:
        raise NotFound(f"No quote with id {quote_id}.", code="quote_not_found")
    principal.require_program(row["from_program"])
    principal.require_program(row["to_program"])
    return quote_out(row)
