"""Routes for valuations."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from conversion_service.deps import Context, Reader
from conversion_service.valuations import service
from conversion_service.valuations.schemas import ValuationIn, ValuationOut
from services.fastlane import AppState, fast_lane
from services.openapi import problems

router = APIRouter(prefix="/v1/valuations", tags=["valuations"])


@router.post(
    "",
    response_model=ValuationOut,
    summary="Points -> cash, or cash -> points needed, for points + cash checkout",
    description="Through the program's cash value. Points -> cash rounds down to the minor unit; "
    "cash -> points needed rounds up to the point. E.g. paying 30 CNY of a 100 CNY bill with WLT "
    '(500 points = 1 CNY): `{"program": "WLT", "cash_minor": 3000, "currency": "CNY"}` -> 15,000 points. '
    "Moves no points, so it needs no Idempotency-Key.",
    responses=problems(
        "program_not_found",
        "program_forbidden",
        "currency_mismatch",
        "no_cash_value",
        "points_out_of_range",
        "ledger_rejected",
        "ledger_unavailable",
    ),
)
@fast_lane
async def create_valuation(body: ValuationIn, principal: Reader, state: AppState) -> Response:
    # On the fast lane (services/fastlane.py): a checkout asks for one on every basket, and FastAPI's
    # routing and dependency resolution were most of its CPU. The answer is the model's JSON either way.
    ctx: Context = state.conversion
    out = await service.value(ctx, principal, body)
    return Response(orjson.dumps(out.model_dump(mode="json")), media_type="application/json")
