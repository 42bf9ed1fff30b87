"""Voucher codes: bulk upload, all or nothing, duplicates refused."""

from __future__ import annotations

from collections import Counter

from catalog_service.codes import repository
from catalog_service.codes.schemas import CodesIn, CodesOut
from services.auth import Principal
from services.db import Database
from services.errors import Conflict, NotFound, Unprocessable

SHOWN_DUPLICATES = 20


class _Exists(Exception):
    def __init__(self, codes: list[str]) -> None:
        super().__init__()
        self.codes = codes


async def upload(db: Database, principal: Principal, sku: str, body: CodesIn) -> CodesOut:
    repeated = sorted(code for code, n in Counter(body.codes).items() if n > 1)
    if repeated:
        raise Unprocessable(
            f"{len(repeated)} code(s) appear more than once in the upload; nothing was stored.",
            code="duplicate_codes",
            extra={"codes": repeated[:SHOWN_DUPLICATES]},
        )
    try:
        async with db.driver() as conn, conn.transaction():
            reward = await repository.reward(conn, sku)
            if reward is None:
                raise NotFound(f"No reward with sku {sku}.", code="reward_not_found")
            principal.require_program(reward["program"])
            if reward["type"] != "voucher":
                raise Unprocessable(
                    f"Reward {sku} is a {reward['type']} reward; only voucher rewards take codes.",
                    code="not_a_voucher",
                )
            inserted = await repository.insert_codes(conn, reward["id"], body.codes)
            if len(inserted) != len(body.codes):
                raise _Exists(sorted(set(body.codes) - inserted))  # rolls the whole upload back
            available = await repository.available(conn, reward["id"])
    except _Exists as exc:
        raise Conflict(
            f"{len(exc.codes)} code(s) already exist in the catalog; nothing was stored.",
            code="code_exists",
            extra={"codes": exc.codes[:SHOWN_DUPLICATES]},
        ) from None
    return CodesOut(sku=sku, added=len(inserted), codes_available=available)
