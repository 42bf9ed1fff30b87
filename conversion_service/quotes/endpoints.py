"""Routes for quotes."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from conversion_service.deps import Ctx, Reader, Writer
from conversion_service.quotes import service
from conversion_service.quotes.schemas import QuoteIn, QuoteOut
from services.openapi import problems

router = APIRouter(prefix="/v1/quotes", tags=["quotes"])

# What pricing a conversion can answer with: a quote's, and a conversion's from the quote fields.
PRICING = (
    "program_not_found",
    "program_forbidden",
    "same_program",
    "no_rate",
    "below_minimum",
    "daily_limit_exceeded",
    "points_out_of_range",
    "amount_too_small",
    "ledger_rejected",
    "ledger_unavailable",
)


@router.post(
    "",
    status_code=201,
    summary="Price a conversion by from_points or by the wished to_points; the rate holds until expires_at",
    description="Integer points only. The fee is `ceil(from_points * fee_bps / 10000)` source points and the "
    "member receives `floor((from_points - fee) * rate.to_points / rate.from_points)`: never more than "
    "the rate allows. By `to_points`, the quote takes the smallest `from_points` that yields at least "
    "that many. A quote moves no points, so it needs no Idempotency-Key; use it once with "
    '`POST /v1/conversions {"quote_id"}`.',
    responses=problems(*PRICING),
)
async def create_quote(body: QuoteIn, principal: Writer, ctx: Ctx) -> QuoteOut:
    return await service.create_quote(ctx, principal, body)


@router.get("/{quote_id}", summary="A quote", responses=problems("quote_not_found"))
async def get_quote(quote_id: UUID, principal: Reader, ctx: Ctx) -> QuoteOut:
    return await service.get_quote(ctx, principal, quote_id)
