"""Read routes: member view and statement, one transaction, one hold."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from ledger_service.deps import Reader
from ledger_service.members import service
from ledger_service.members.schemas import MemberOut, Statement, TierHistory, TransactionDetail
from ledger_service.postings.schemas import HoldOut
from services.deps import DB, Cursor, Limit, MemberPath, ProgramPath
from services.openapi import problems

router = APIRouter(tags=["members"])

READ_ERRORS = problems(
    "invalid_cursor",
    "program_not_found",
    "program_forbidden",
    "member_not_found",
    "transaction_not_found",
    "hold_not_found",
)


@router.get(
    "/v1/programs/{code}/members/{member_ref}",
    summary="A member's balance, held and available points, tier and upcoming expiry",
    responses=READ_ERRORS,
)
async def get_member(
    code: ProgramPath,
    member_ref: MemberPath,
    principal: Reader,
    db: DB,
) -> MemberOut:
    principal.require_program(code)
    return await service.member_view(db, code, member_ref)


@router.get(
    "/v1/programs/{code}/members/{member_ref}/transactions",
    summary="A member's statement: balance movements, newest first",
    responses=READ_ERRORS,
)
async def get_statement(
    code: ProgramPath,
    member_ref: MemberPath,
    principal: Reader,
    db: DB,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Statement:
    principal.require_program(code)
    return await service.statement(db, code, member_ref, limit=limit, cursor=cursor)


@router.get(
    "/v1/programs/{code}/members/{member_ref}/tiers",
    summary="A member's tier changes, newest first",
    responses=READ_ERRORS,
)
async def get_tier_history(
    code: ProgramPath,
    member_ref: MemberPath,
    principal: Reader,
    db: DB,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TierHistory:
    principal.require_program(code)
    return await service.tier_history(db, code, member_ref, limit=limit, cursor=cursor)


@router.get(
    "/v1/transactions/{transaction_id}",
    summary="One transaction with its postings",
    responses=READ_ERRORS,
    tags=["points"],
)
async def get_transaction(transaction_id: UUID, principal: Reader, db: DB) -> TransactionDetail:
    return await service.transaction(db, principal, transaction_id)


@router.get(
    "/v1/holds/{hold_id}",
    summary="One hold and its status",
    responses=READ_ERRORS,
    tags=["holds"],
)
async def get_hold(hold_id: UUID, principal: Reader, db: DB) -> HoldOut:
    return await service.hold(db, principal, hold_id)
