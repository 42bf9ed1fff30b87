"""Finance routes: the liability roll-forward, its aging, and issuance cohorts (DESIGN §9)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ledger_service.deps import AsOf, Reader
from ledger_service.finance import service
from ledger_service.finance.schemas import Aging, Cohorts, Period, RollForward
from services.deps import ProgramPath
from services.openapi import problems

router = APIRouter(tags=["finance"])

From = Annotated[
    date | None, Query(alias="from", description="First day of the first period, in the program's time zone")
]
To = Annotated[
    date | None, Query(alias="to", description="Day after the last period, in the program's time zone")
]


@router.get(
    "/v1/programs/{code}/liability",
    response_model_by_alias=True,
    summary="The liability roll-forward: opening, issued, redeemed, expired, adjusted, closing per period",
    description="One row per calendar month or day (in the program's time zone) covering [from, to), "
    "from postings on member accounts. Every row closes (closing = opening + issued - redeemed - expired "
    "+ adjusted), in points and in cash; each closing is the next opening; the last closing is the "
    "outstanding points when `to` is not in the past.",
    responses=problems("program_not_found", "program_forbidden", "invalid_period", "period_range_too_large"),
)
async def liability(
    request: Request,
    code: ProgramPath,
    principal: Reader,
    start: From = None,
    end: To = None,
    period: Period = "month",
) -> RollForward:
    principal.require_program(code)
    return await service.roll_forward(request.app.state.db, code, start, end, period)


@router.get(
    "/v1/programs/{code}/liability/aging",
    summary="Outstanding points and cash by when they expire: 0-3m, 3-6m, 6-12m, 12m+, never",
    description="Open lots bucketed by expiry counted from `as_of` (default now; not in the past). Lots "
    "already due count in 0-3m. Members below zero hold no lots: their sum is `negative_balances`, so "
    "the buckets plus it equal the outstanding points.",
    responses=problems("program_not_found", "program_forbidden", "as_of_in_past"),
)
async def aging(
    request: Request,
    code: ProgramPath,
    principal: Reader,
    as_of: AsOf = None,
) -> Aging:
    principal.require_program(code)
    return await service.aging(request.app.state.db, code, as_of)


@router.get(
    "/v1/programs/{code}/cohorts",
    response_model_by_alias=True,
    summary="Issuance cohorts by month: issued, redeemed, expired, outstanding and redemption curves",
    description="The lots of earns issued in each month of [from, to), what became of their points, and "
    "the share redeemed within 1, 3, 6 and 12 months of each lot's issue (from lot consumption, net of "
    "refunds): the curves used to estimate breakage.",
    responses=problems("program_not_found", "program_forbidden", "invalid_period", "period_range_too_large"),
)
async def cohorts(
    request: Request,
    code: ProgramPath,
    principal: Reader,
    start: From = None,
    end: To = None,
) -> Cohorts:
    principal.require_program(code)
    return await service.cohorts(request.app.state.db, code, start, end)
