"""A program's report for a period: what was issued, redeemed, expired, reversed and is owed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from ledger_service.programs.schemas import ProgramOut
from ledger_service.reports import repository
from services.db import Database
from services.errors import NotFound

MERCHANTS = 100


class MerchantIssued(BaseModel):
    merchant_id: str
    points: int
    transactions: int


class Report(BaseModel):
    program: str
    period_from: datetime = Field(alias="from")
    period_to: datetime = Field(alias="to")
    issued: int = Field(description="Points earned in the period")
    redeemed: int = Field(description="Points burned or captured")
    expired: int = Field(description="Points that expired to breakage")
    reversed_earns: int = Field(description="Points clawed back from earns")
    refunded_redemptions: int = Field(description="Points given back by reversing burns and captures")
    adjusted: int = Field(description="Net of operations corrections")
    transferred: int = Field(description="Net of member-to-member transfers (always 0 within a program)")
    outstanding: int = Field(description="Sum of member balances at the end of the period")
    outstanding_at_start: int
    currency: str
    liability_cash_minor: int = Field(description="Outstanding at the program's cash value, rounded down")
    redemption_rate_bps: int | None = Field(description="redeemed / issued, in basis points")
    breakage_rate_bps: int | None = Field(description="expired / issued, in basis points")
    transactions: int
    issued_by_merchant: list[MerchantIssued]

    model_config = {"populate_by_name": True}


def liability(outstanding: int, cash_points: int, cash_minor: int) -> int:
    return max(outstanding, 0) * cash_minor // cash_points


@dataclass(frozen=True)
class Summary:
    outstanding: int
    members: int
    liability_cash_minor: int


async def summaries(db: Database, programs: list[ProgramOut]) -> dict[str, Summary]:
    """Outstanding, members and liability in cash now, for each program (the ops console's overview)."""
    async with db.driver() as conn:
        rows = await repository.summaries(conn, [p.code for p in programs])
    out = {}
    for p in programs:
        row = rows.get(p.code)
        outstanding = row["outstanding"] if row else 0
        out[p.code] = Summary(
            outstanding=outstanding,
            members=row["members"] if row else 0,
            liability_cash_minor=liability(outstanding, p.cash_value.points, p.cash_value.cash_minor),
        )
    return out


def _rate(part: int, whole: int) -> int | None:
    return None if whole == 0 else part * 10_000 // whole


async def report(db: Database, code: str, start: datetime, end: datetime) -> Report:
    async with db.driver() as conn:
        program = await repository.program(conn, code)
        if program is None:
            raise NotFound(f"No program with code {code}.", code="program_not_found")
        rows = await repository.flows(conn, program["id"], start, end)
        outstanding = await repository.outstanding(conn, program["id"], end)
        at_start = await repository.outstanding(conn, program["id"], start)
        merchants = await repository.by_merchant(conn, program["id"], start, end, MERCHANTS)
    sums: dict[tuple[str, str], int] = {(r["type"], r["kind"]): r["amount"] for r in rows}

    def total(type_: str, *kinds: str) -> int:
        return sum(v for (t, k), v in sums.items() if t == type_ and (not kinds or k in kinds))

    issued = total("earn")
    redeemed = -(total("burn") + total("capture"))
    expired = -total("expiry")
    return Report(
        program=code,
        period_from=start,
        period_to=end,
        issued=issued,
        redeemed=redeemed,
        expired=expired,
        reversed_earns=-total("reversal", "earn"),
        refunded_redemptions=total("reversal", "burn", "capture"),
        adjusted=total("adjustment"),
        transferred=total("transfer"),
        outstanding=outstanding,
        outstanding_at_start=at_start,
        currency=program["currency"],
        liability_cash_minor=liability(outstanding, program["cash_points"], program["cash_minor"]),
        redemption_rate_bps=_rate(redeemed, issued),
        breakage_rate_bps=_rate(expired, issued),
        transactions=sum(r["n"] for r in rows),
        issued_by_merchant=[MerchantIssued.model_validate(dict(m)) for m in merchants],
    )
