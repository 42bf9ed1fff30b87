"""Finance figures for a program, built from postings and lots (never from counters that can drift).

Periods are calendar months or days in UTC. Cash is floor(points x cash_minor / cash_points), as in the
program report, for each opening and closing; a row's adjusted cash also carries the rounding, so
that every row closes in cash as it does in points."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from ledger_service.finance import repository
from ledger_service.finance.schemas import (
    AGING_BUCKETS,
    CURVE_MONTHS,
    Aging,
    AgingBucket,
    CashValue,
    Cohort,
    Cohorts,
    CurvePoint,
    Period,
    RollForward,
    RollForwardRow,
)
from services.db import Database
from services.errors import NotFound, Unprocessable

MAX_PERIODS = 400


@dataclass(frozen=True)
class Valuation:
    points: int
    cash_minor: int
    currency: str

    def cash(self, points: int) -> int:
        return points * self.cash_minor // self.points

    def model(self) -> CashValue:
        return CashValue(points=self.points, cash_minor=self.cash_minor, currency=self.currency)


def add_months(day: date, months: int) -> date:
    """The first of the month `months` after `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_start(day: date, period: Period) -> date:
    return date(day.year, day.month, 1) if period == "month" else day


def next_period(day: date, period: Period) -> date:
    return add_months(day, 1) if period == "month" else day + timedelta(days=1)


def periods(start: date, end: date, period: Period) -> list[tuple[date, date]]:
    """The calendar periods that cover [start, end)."""
    if start >= end:
        raise Unprocessable("from must be before to.", code="invalid_period")
    out: list[tuple[date, date]] = []
    cursor = period_start(start, period)
    while cursor < end:
        following = next_period(cursor, period)
        out.append((cursor, following))
        if len(out) > MAX_PERIODS:
            raise Unprocessable(
                f"At most {MAX_PERIODS} periods per request; narrow from and to, or use period=month.",
                code="period_range_too_large",
            )
        cursor = following
    return out


def default_window(today: date, period: Period) -> tuple[date, date]:
    """The last 12 months, or the last 30 days, up to the end of the current one."""
    if period == "month":
        end = add_months(today, 1)
        return add_months(today, -11), end
    return today - timedelta(days=29), today + timedelta(days=1)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def roll_forward_rows(
    spans: list[tuple[date, date]], opening: int, flows: dict[date, asyncpg.Record], value: Valuation
) -> list[RollForwardRow]:
    rows: list[RollForwardRow] = []
    for start, end in spans:
        f = flows.get(start)
        issued, redeemed, expired, adjusted = (
            (int(f["issued"]), int(f["redeemed"]), int(f["expired"]), int(f["adjusted"]))
            if f
            else (0, 0, 0, 0)
        )
        closing = opening + issued - redeemed - expired + adjusted
        issued_cash, redeemed_cash, expired_cash = (
            value.cash(issued),
            value.cash(redeemed),
            value.cash(expired),
        )
        opening_cash, closing_cash = value.cash(opening), value.cash(closing)
        rows.append(
            RollForwardRow(
                period_start=start,
                period_end=end,
                opening=opening,
                issued=issued,
                redeemed=redeemed,
                expired=expired,
                adjusted=adjusted,
                closing=closing,
                opening_cash_minor=opening_cash,
                issued_cash_minor=issued_cash,
                redeemed_cash_minor=redeemed_cash,
                expired_cash_minor=expired_cash,
                adjusted_cash_minor=closing_cash - opening_cash - issued_cash + redeemed_cash + expired_cash,
                closing_cash_minor=closing_cash,
            )
        )
        opening = closing
    return rows


async def _program(conn: asyncpg.Connection, code: str) -> tuple[int, Valuation]:
    row = await repository.program(conn, code)
    if row is None:
        raise NotFound(f"No program with code {code}.", code="program_not_found")
    return row["id"], Valuation(row["cash_points"], row["cash_minor"], row["currency"])


async def roll_forward(
    db: Database, code: str, start: date | None, end: date | None, period: Period
) -> RollForward:
    default_start, default_end = default_window(datetime.now(UTC).date(), period)
    spans = periods(start or default_start, end or default_end, period)
    lo, hi = midnight(spans[0][0]), midnight(spans[-1][1])
    async with db.driver() as conn:
        program_id, value = await _program(conn, code)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            opening = await repository.opening(conn, program_id, lo)
            flows = await repository.flows(conn, program_id, lo, hi, period)
            outstanding = await repository.opening(conn, program_id, datetime.now(UTC) + timedelta(days=1))
    by_period = {r["period"].date(): r for r in flows}
    return RollForward(
        program=code,
        period=period,
        period_from=spans[0][0],
        period_to=spans[-1][1],
        cash_value=value.model(),
        outstanding=outstanding,
        rows=roll_forward_rows(spans, opening, by_period, value),
    )


async def aging(db: Database, code: str, as_of: datetime | None) -> Aging:
    now = datetime.now(UTC)
    as_of = as_of or now
    if as_of < now - timedelta(minutes=5):
        raise Unprocessable(
            "as_of may not be in the past: the ledger keeps lots as they are now, not as they were.",
            code="as_of_in_past",
        )
    async with db.driver() as conn:
        program_id, value = await _program(conn, code)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            buckets = await repository.aging(conn, program_id, as_of)
            negative = await repository.negative_balances(conn, program_id)
    outstanding = sum(buckets.values()) + negative
    return Aging(
        program=code,
        as_of=as_of,
        cash_value=value.model(),
        outstanding=outstanding,
        outstanding_cash_minor=value.cash(outstanding),
        negative_balances=negative,
        buckets=[
            AgingBucket(bucket=b, points=buckets.get(b, 0), cash_minor=value.cash(buckets.get(b, 0)))
            for b in AGING_BUCKETS
        ],
    )


def cohort(row: asyncpg.Record, today: date) -> Cohort:
    month: date = row["month"].date()
    issued, outstanding, consumed = int(row["issued"]), int(row["outstanding"]), int(row["consumed"])
    curve = []
    for months, key in zip(CURVE_MONTHS, ("r1", "r3", "r6", "r12"), strict=True):
        redeemed = int(row[key])
        curve.append(
            CurvePoint(
                months=months,
                redeemed=redeemed,
                share_bps=None if issued == 0 else redeemed * 10_000 // issued,
                # the cohort's last lots were issued at the end of its month
                complete=add_months(month, months + 1) <= today,
            )
        )
    return Cohort(
        month=month,
        lots=row["lots"],
        issued=issued,
        redeemed=int(row["redeemed"]),
        reversed=int(row["reversed"]),
        transferred=int(row["transferred"]),
        expired=issued - outstanding - consumed,
        outstanding=outstanding,
        curve=curve,
    )


async def cohorts(db: Database, code: str, start: date | None, end: date | None) -> Cohorts:
    today = datetime.now(UTC).date()
    default_start, default_end = default_window(today, "month")
    spans = periods(start or default_start, end or default_end, "month")
    async with db.driver() as conn:
        program_id, _ = await _program(conn, code)
        rows = await repository.cohorts(conn, program_id, midnight(spans[0][0]), midnight(spans[-1][1]))
    return Cohorts(
        program=code,
        period_from=spans[0][0],
        period_to=spans[-1][1],
        cohorts=[cohort(r, today) for r in rows],
    )
