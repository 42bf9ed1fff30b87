"""Routes for coalition partners and settlement (DESIGN §8)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from ledger_service.deps import Admin, Reader, wants_csv
from ledger_service.partners import service
from ledger_service.partners.schemas import (
    FundingIn,
    FundingOut,
    PartnerIn,
    PartnerList,
    PartnerOut,
    PartnerPatch,
    Position,
    Settlement,
    SettlementList,
    StatementList,
    TermsIn,
    TermsList,
    TermsOut,
)
from ledger_service.schemas_common import PartnerCode
from services.deps import Cursor, ProgramPath
from services.idempotency import idempotency_key
from services.openapi import problems
from services.validation import Timestamp

router = APIRouter(tags=["partners"])

Code = Annotated[PartnerCode, Path()]
Limit = Annotated[int, Query(ge=1, le=500)]
CSV = "text/csv"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSV: {}}, "description": "With `Accept: text/csv`: the lines as CSV"}
}


@router.post(
    "/v1/partners",
    status_code=201,
    summary="Register a coalition partner (issuer, acceptor or both)",
    responses=problems("partner_exists"),
)
async def create_partner(request: Request, body: PartnerIn, _: Admin) -> PartnerOut:
    return await service.create_partner(request.app.state.db, body)


@router.get(
    "/v1/partners",
    summary="Partners, oldest first",
    responses=problems("invalid_cursor"),
)
async def list_partners(
    request: Request, principal: Reader, limit: Limit = 50, cursor: Cursor = None
) -> PartnerList:
    return await service.list_partners(request.app.state.db, principal, limit=limit, cursor=cursor)


@router.get(
    "/v1/partners/{code}",
    summary="One partner",
    responses=problems("partner_not_found", "partner_forbidden"),
)
async def get_partner(request: Request, code: Code, principal: Reader) -> PartnerOut:
    return await service.get_partner(request.app.state.db, principal, code)


@router.patch(
    "/v1/partners/{code}",
    summary="Rename, change roles, suspend or reactivate a partner",
    description="A suspended partner's earns, burns, holds and captures are `422 partner_suspended`.",
    responses=problems("partner_not_found"),
)
async def update_partner(request: Request, code: Code, body: PartnerPatch, _: Admin) -> PartnerOut:
    return await service.update_partner(request.app.state.db, code, body)


@router.put(
    "/v1/partners/{code}/terms/{program}",
    status_code=201,
    summary="A new version of the partner's terms for a program, in force from effective_from",
    description="Versions are never edited. A version may not start inside a period already settled "
    "(`422 terms_in_closed_period`); two versions cannot start at the same instant "
    "(`409 terms_version_exists`).",
    responses=problems(
        "partner_not_found",
        "program_not_found",
        "program_forbidden",
        "terms_version_exists",
        "terms_in_closed_period",
        "effective_from_in_past",
    ),
)
async def put_terms(
    request: Request, code: Code, program: ProgramPath, body: TermsIn, principal: Admin
) -> TermsOut:
    return await service.put_terms(request.app.state.db, principal, code, program, body)


@router.get(
    "/v1/partners/{code}/terms",
    summary="Every version of the partner's terms, per program",
    responses=problems("partner_not_found", "partner_forbidden"),
)
async def list_terms(request: Request, code: Code, principal: Reader) -> TermsList:
    return await service.list_terms(request.app.state.db, principal, code)


@router.post(
    "/v1/partners/{code}/fundings",
    status_code=201,
    response_model=FundingOut,
    summary="A prepaid partner buys a pack of points for a program",
    description="Its earns draw these points down; beyond them an earn is `422 partner_funds_exhausted`.",
    responses=problems(
        "partner_not_found",
        "partner_forbidden",
        "program_not_found",
        "program_forbidden",
        "partner_suspended",
        "partner_terms_missing",
        "ledger_busy",
    ),
)
async def fund(
    request: Request,
    code: Code,
    body: FundingIn,
    principal: Admin,
    key: Annotated[str, Depends(idempotency_key)],
) -> Response:
    return (await service.fund(request.app.state.engine, principal, code, body, key)).response()


@router.post(
    "/v1/settlements",
    status_code=201,
    summary="Close every partner period that ended by as_of into statement lines",
    description="Idempotent and safe from two processes at once: a period closes once; run again, it "
    "closes nothing (`lines: []`). Periods are in each program's time zone. A transaction belongs to "
    "the period of its occurred_at, or to the first open period when that one is closed. A run spans "
    "every program, so a key limited to programs may not start it (403 program_forbidden).",
    responses=problems("as_of_in_future", "program_forbidden"),
)
async def settle(
    request: Request,
    principal: Admin,
    as_of: Annotated[Timestamp | None, Query(description="RFC 3339; default now; not in the future")] = None,
) -> Settlement:
    principal.require_job_scope(None)
    return await service.settle(request.app.state.db, as_of)


@router.get(
    "/v1/settlements",
    summary="Settlement runs and the lines they closed, newest first",
    responses=problems("invalid_cursor"),
)
async def list_settlements(
    request: Request, principal: Reader, limit: Limit = 20, cursor: Cursor = None
) -> SettlementList:
    return await service.list_settlements(request.app.state.db, principal, limit=limit, cursor=cursor)


@router.get(
    "/v1/settlements/{settlement_id}",
    response_model=Settlement,
    summary="One settlement run and its lines; `Accept: text/csv` gives the lines as CSV",
    responses={**problems("settlement_not_found"), **CSV_RESPONSE},
)
async def get_settlement(request: Request, settlement_id: UUID, principal: Reader) -> Settlement | Response:
    found = await service.get_settlement(request.app.state.db, principal, settlement_id)
    if wants_csv(request):
        return Response(service.lines_csv(found.lines), media_type=CSV)
    return found


@router.get(
    "/v1/partners/{code}/statements",
    response_model=StatementList,
    summary="A partner's closed statement lines, newest period first; `Accept: text/csv` for CSV",
    responses={**problems("invalid_cursor", "partner_not_found", "partner_forbidden"), **CSV_RESPONSE},
)
async def statements(
    request: Request, code: Code, principal: Reader, limit: Limit = 100, cursor: Cursor = None
) -> StatementList | Response:
    page = await service.statements(request.app.state.db, principal, code, limit=limit, cursor=cursor)
    if wants_csv(request):
        headers = {"Link": f'<?cursor={page.next_cursor}>; rel="next"'} if page.next_cursor else None
        return Response(service.lines_csv(page.data), media_type=CSV, headers=headers)
    return page


@router.get(
    "/v1/partners/{code}/position",
    summary="A partner's open periods so far, prepaid points and credit used, per program",
    responses=problems("partner_not_found", "partner_forbidden"),
)
async def position(request: Request, code: Code, principal: Reader) -> Position:
    return await service.position(request.app.state.db, principal, code)
