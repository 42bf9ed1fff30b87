"""Routes for voucher codes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from catalog_service.codes import service
from catalog_service.codes.schemas import MAX_CODES_PER_UPLOAD, CodesIn, CodesOut
from catalog_service.common import Admin, Sku
from services.deps import DB
from services.openapi import problems

router = APIRouter(prefix="/v1/rewards", tags=["voucher codes"])


@router.post(
    "/{sku}/codes",
    status_code=201,
    summary="Upload voucher codes for a voucher reward (catalog:admin)",
    description=f"Up to {MAX_CODES_PER_UPLOAD} codes per upload, all stored or none. A code that repeats "
    "in the upload (`422 duplicate_codes`) or already exists anywhere in the catalog (`409 code_exists`) "
    "refuses the whole upload; the problem lists the offending codes. Each code is given out at most once.",
    responses=problems("reward_not_found", "code_exists", "duplicate_codes", "not_a_voucher"),
)
async def upload_codes(sku: Annotated[Sku, Path()], body: CodesIn, principal: Admin, db: DB) -> CodesOut:
    return await service.upload(db, principal, sku, body)
