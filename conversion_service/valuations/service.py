"""Valuations through a program's cash value (`points` points = `cash_minor` minor units), in integers:
points -> cash rounds down to the fen, cash -> points needed rounds up to the point. No SQL: the cash
value comes from the ledger (cached briefly), so this feature has no repository."""

from __future__ import annotations

from conversion_service import ledger
from conversion_service.arithmetic import cash_for_points, fits, points_for_cash
from conversion_service.deps import Context
from conversion_service.rates.schemas import CashValue
from conversion_service.valuations.schemas import ValuationIn, ValuationOut
from services.auth import Principal
from services.errors import Unprocessable


async def value(ctx: Context, principal: Principal, body: ValuationIn) -> ValuationOut:
    principal.require_program(body.program)
    program = await ledger.program(ctx.ledger, body.program, ttl_s=ctx.settings.program_cache_s)
    cash_value = CashValue(
        points=program.cash_points, cash_minor=program.cash_minor, currency=program.currency
    )
    if body.points is not None:
        return ValuationOut(
            program=body.program,
            direction="points_to_cash",
            points=body.points,
            cash_minor=cash_for_points(body.points, program.cash_points, program.cash_minor),
            currency=program.currency,
            rounding="down",
            cash_value=cash_value,
        )
    assert body.cash_minor is not None and body.currency is not None
    if body.currency != program.currency:
        raise Unprocessable(
            f"Program {body.program} values its points in {program.currency}, not {body.currency}.",
            code="currency_mismatch",
        )
    if program.cash_minor == 0:
        raise Unprocessable(f"Points of {body.program} have no cash value.", code="no_cash_value")
    points = points_for_cash(body.cash_minor, program.cash_points, program.cash_minor)
    if not fits(points):
        raise Unprocessable("The points needed exceed the 64-bit integer range.", code="points_out_of_range")
    return ValuationOut(
        program=body.program,
        direction="cash_to_points",
        points=points,
        cash_minor=body.cash_minor,
        currency=program.currency,
        rounding="up",
        cash_value=cash_value,
    )
