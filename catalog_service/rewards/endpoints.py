"""Routes for rewards: parse, check scope, call the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from catalog_service.common import Admin, Reader, Sku, get_ledger
from catalog_service.rewards import service
from catalog_service.rewards.schemas import RewardIn, RewardList, RewardOut, RewardPatch, RewardType
from services.conventions import MemberRef
from services.deps import DB, Cursor, Limit, ProgramQuery
from services.ledger_client import LedgerClient
from services.openapi import problems

router = APIRouter(prefix="/v1/rewards", tags=["rewards"])

SkuPath = Annotated[Sku, Path()]
Ledger = Annotated[LedgerClient, Depends(get_ledger)]


@router.post(
    "",
    status_code=201,
    summary="Create a reward (catalog:admin)",
    description="The program must exist in the ledger. `stock` null (or absent) is unlimited; a voucher "
    "reward is also limited by its uploaded codes.",
    responses=problems(
        ("program_not_found", 422),
        "program_forbidden",
        "reward_exists",
        "ledger_rejected",
        "ledger_unavailable",
    ),
)
async def create_reward(body: RewardIn, principal: Admin, db: DB, ledger: Ledger) -> RewardOut:
    return await service.create(db, ledger, principal, body)


@router.get(
    "",
    summary="Browse rewards",
    description="Filters combine. `active=true`: inside the active window now. `affordable_for=<member_ref>` "
    "(needs `program`): rewards whose unit price is within the member's available points, from one ledger "
    "balance lookup per request.",
    responses=problems(
        "invalid_cursor",
        "program_not_found",
        "program_forbidden",
        "program_required",
        "ledger_rejected",
        "ledger_unavailable",
    ),
)
async def list_rewards(
    principal: Reader,
    db: DB,
    ledger: Ledger,
    program: ProgramQuery = None,
    category: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    merchant: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    type: Annotated[RewardType | None, Query()] = None,
    active: Annotated[bool | None, Query(description="true: active now; false: not active now")] = None,
    affordable_for: Annotated[MemberRef | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RewardList:
    return await service.list_rewards(
        db,
        ledger,
        principal,
        program=program,
        category=category,
        merchant=merchant,
        type_=type,
        active=active,
        affordable_for=affordable_for,
        limit=limit,
        cursor=cursor,
    )


@router.get("/{sku}", summary="Get a reward", responses=problems("reward_not_found"))
async def get_reward(sku: SkuPath, principal: Reader, db: DB) -> RewardOut:
    return await service.get(db, principal, sku)


@router.patch(
    "/{sku}",
    summary="Change a reward (catalog:admin)",
    description="`sku`, `type` and `program` are fixed. `stock` sets the units left to redeem (null: "
    "unlimited); units held by live redemptions are not counted in it. Null clears an optional field.",
    responses=problems("reward_not_found"),
)
async def patch_reward(sku: SkuPath, body: RewardPatch, principal: Admin, db: DB) -> RewardOut:
    return await service.update(db, principal, sku, body)
