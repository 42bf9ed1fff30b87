"""Routes for earning rules: versions, and a dry run of an earn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ledger_service.deps import Admin, Reader
from ledger_service.rules import service
from ledger_service.rules.schemas import EvaluateIn, Evaluation, RuleSetIn, RuleSetList, RuleSetOut
from ledger_service.rules.service import RuleBook
from services.auth import Principal, require
from services.deps import DB, ProgramPath
from services.errors import Unprocessable
from services.openapi import problems

router = APIRouter(prefix="/v1/programs/{code}/rules", tags=["rules"])


async def _book(request: Request) -> RuleBook:
    book: RuleBook = request.app.state.rules
    return book


@router.post(
    "",
    status_code=201,
    response_model=RuleSetOut,
    summary="Add a version of the program's earning rules, in force from effective_from",
    description="Versions are never edited; each new one must start after the latest. Matching "
    "multipliers do not stack (the highest applies); bonus points add; rounding happens once, after "
    "the multiplier; caps apply last.",
    responses=problems(
        "program_not_found",
        "program_forbidden",
        "rule_version_overlap",
        "effective_from_in_past",
        "currency_mismatch",
        "segment_not_found",
    ),
)
async def create_rules(
    code: ProgramPath,
    body: RuleSetIn,
    principal: Admin,
    db: DB,
    book: Annotated[RuleBook, Depends(_book)],
) -> RuleSetOut:
    principal.require_program(code)
    return await service.create_rule_set(db, book, code, body, principal.key_id)


@router.get(
    "",
    response_model=RuleSetList,
    summary="All versions of the earning rules",
    responses=problems("program_not_found", "program_forbidden"),
)
async def list_rules(
    code: ProgramPath, principal: Reader, book: Annotated[RuleBook, Depends(_book)]
) -> RuleSetList:
    principal.require_program(code)
    return await service.list_rule_sets(book, code)


@router.post(
    "/evaluate",
    response_model=Evaluation,
    summary="Price a purchase under the rules in force, without posting",
    description="Takes the body of `POST /v1/earn` (`program`, if sent, must be the path's; `reference` "
    "may be left out). Returns the points and the breakdown the earn would get, before the per-member "
    "caps (those depend on what the member has earned when the earn is posted).",
    responses=problems(
        "program_not_found",
        "program_forbidden",
        "program_mismatch",
        "currency_mismatch",
        "no_earning_rules",
        "occurred_at_out_of_range",
    ),
)
async def evaluate(
    code: ProgramPath,
    body: EvaluateIn,
    principal: Annotated[Principal, Depends(require("ledger:read", "ledger:earn"))],
    book: Annotated[RuleBook, Depends(_book)],
) -> Evaluation:
    principal.require_program(code)
    if body.program is not None and body.program != code:
        raise Unprocessable(
            f"The body names program {body.program}, the path {code}.", code="program_mismatch"
        )
    if body.purchase is None:  # explicit points: what the earn would post, as given
        assert body.points is not None
        return Evaluation(program=code, member_ref=body.member_ref, points=body.points, breakdown={})
    priced = await book.price(code, body.member_ref, body.purchase, body.occurred_at)
    breakdown = dict(priced.breakdown)
    if priced.member_caps:
        breakdown["member_caps"] = priced.member_caps
    return Evaluation(program=code, member_ref=body.member_ref, points=priced.points, breakdown=breakdown)
