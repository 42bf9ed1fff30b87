"""Rewards: creating, browsing and changing what members can redeem."""

from __future__ import annotations

from typing import Any

import asyncpg

from catalog_service.rewards import repository
from catalog_service.rewards.schemas import RewardIn, RewardList, RewardOut, RewardPatch
from services.auth import Principal
from services.db import Database
from services.errors import Conflict, NotFound, Unprocessable
from services.ledger_client import LedgerClient, answered
from services.pagination import decode_cursor, page_of


def to_out(row: asyncpg.Record) -> RewardOut:
    return RewardOut.model_validate(dict(row))


def not_found(sku: str) -> NotFound:
    return NotFound(f"No reward with sku {sku}.", code="reward_not_found")


def _invalid(field: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{field}: {message}",
        code="validation_error",
        extra={"errors": [{"field": field, "message": message}]},
    )


async def _check_program(ledger: LedgerClient, code: str) -> None:
    unknown = Unprocessable(f"The ledger has no program {code}.", code="program_not_found")
    await answered(ledger.program(code), "the program lookup", not_found=unknown)


async def create(db: Database, ledger: LedgerClient, principal: Principal, body: RewardIn) -> RewardOut:
    principal.require_program(body.program)
    await _check_program(ledger, body.program)
    async with db.driver() as conn:
        row = await repository.insert(conn, body.model_dump())
    if row is None:
        raise Conflict(f"A reward with sku {body.sku} already exists.", code="reward_exists")
    return to_out(row)


async def get(db: Database, principal: Principal, sku: str) -> RewardOut:
    async with db.driver() as conn:
        row = await repository.get(conn, sku)
    if row is None:
        raise not_found(sku)
    principal.require_program(row["program"])
    return to_out(row)


async def update(db: Database, principal: Principal, sku: str, patch: RewardPatch) -> RewardOut:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    async with db.driver() as conn, conn.transaction():
        current = await repository.lock(conn, sku)
        if current is None:
            raise not_found(sku)
        principal.require_program(current["program"])
        merged = {**dict(current), **changes}
        if (
            merged["active_from"] is not None
            and merged["active_to"] is not None
            and merged["active_from"] >= merged["active_to"]
        ):
            raise _invalid("active_to", "active_from must be before active_to")
        if "cash_price_minor" in changes:
            if changes["cash_price_minor"] is None:
                changes["currency"] = None
            elif merged["currency"] is None:
                changes["currency"] = "CNY"
        elif changes.get("currency") is not None and current["cash_price_minor"] is None:
            raise _invalid("currency", "currency is only meaningful with cash_price_minor")
        elif (
            "currency" in changes and changes["currency"] is None and current["cash_price_minor"] is not None
        ):
            raise _invalid("currency", "a reward with a cash price needs a currency")
        row = await repository.update(conn, current["id"], changes, set_stock="stock" in changes)
    return to_out(row)


async def list_rewards(
    db: Database,
    ledger: LedgerClient,
    principal: Principal,
    *,
    program: str | None,
    category: str | None,
    merchant: str | None,
    type_: str | None,
    active: bool | None,
    affordable_for: str | None,
    limit: int,
    cursor: str | None,
) -> RewardList:
    after = decode_cursor(cursor) or 0
    if program is not None:
        principal.require_program(program)
    max_price: int | None = None
    if affordable_for is not None:
        if program is None:
            raise Unprocessable(
                "affordable_for needs program: a member's points are per program.", code="program_required"
            )
        # One ledger call per request, whatever the number of rewards: the member's available points.
        unknown = NotFound(f"The ledger has no program {program}.", code="program_not_found")
        member = await answered(
            ledger.member(program, affordable_for), "the balance lookup", not_found=unknown
        )
        max_price = int(member["available"])
    async with db.driver() as conn:
        rows = await repository.list_rewards(
            conn,
            after=after,
            limit=limit + 1,
            program=program,
            category=category,
            merchant=merchant,
            type_=type_,
            active=active,
            max_price=max_price,
            programs=principal.program_list(),
        )
    page, next_cursor = page_of(rows, limit, "id")
    return RewardList(data=[to_out(r) for r in page], next_cursor=next_cursor)
