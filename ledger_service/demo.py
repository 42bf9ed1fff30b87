"""Demo programs loaded by `jifen run` into an empty database. Cash values are illustrative."""

from __future__ import annotations

from ledger_service.programs import service
from ledger_service.programs.schemas import ProgramIn
from services.db import Database

DEMO_PROGRAMS: list[dict[str, object]] = [
    {
        "code": "WLT",
        "name": "Ping An Wanlitong",
        "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "fixed", "month": 12, "day": 31, "years_after": 1},
    },
    {
        "code": "JFB",
        "name": "Alipay Jifenbao",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "fixed", "month": 12, "day": 31, "years_after": 1},
    },
    {
        "code": "CAIBEI",
        "name": "QQ Caibei",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
    },
    {
        "code": "BOC",
        "name": "Bank of China Great Wall card points",
        "cash_value": {"points": 1000, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "rolling", "months": 24},
    },
    {
        "code": "MU",
        "name": "China Eastern Eastern Miles",
        "cash_value": {"points": 20, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "rolling", "months": 36},
        "tiers": [{"code": "silver", "min_points": 40000}, {"code": "gold", "min_points": 80000}],
    },
]


async def load_demo(db: Database) -> list[str]:
    """Creates the demo programs if the ledger has no program yet; returns the codes created."""
    async with db.driver() as conn:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger.programs)"):
            return []
    created = []
    for spec in DEMO_PROGRAMS:
        program = await service.create_program(db, ProgramIn.model_validate(spec))
        created.append(program.code)
    return created
