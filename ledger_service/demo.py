"""Demo programs loaded by `jifen run` into an empty database, with coalition partners and their terms
(a bank issuer, an airline that issues and accepts, a coffee chain acceptor). Cash values and prices
are illustrative; every demo program keeps Beijing time."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger_service.partners import service as partners
from ledger_service.partners.schemas import PartnerIn, TermsIn
from ledger_service.programs import service
from ledger_service.programs.schemas import ProgramIn
from services.auth import Principal
from services.db import Database

DEMO_TIMEZONE = "Asia/Shanghai"

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


DEMO_PARTNERS: list[dict[str, object]] = [
    {"code": "ICBC", "name": "ICBC credit cards", "roles": ["issuer"]},
    {"code": "CEA", "name": "China Eastern Airlines", "roles": ["issuer", "acceptor"]},
    {"code": "LUCKIN", "name": "Luckin Coffee", "roles": ["acceptor"]},
]


# (partner, program, terms): the bank buys WLT points monthly on credit; the airline prepays its BOC
# points weekly and accepts them for seats; the coffee chain takes WLT and JFB at the counter, daily.
def _terms(
    issue: tuple[int, int], accept: tuple[int, int], period: str, **extra: object
) -> dict[str, object]:
    return {
        "issue_price": {"points": issue[0], "cash_minor": issue[1]},
        "accept_price": {"points": accept[0], "cash_minor": accept[1]},
        "currency": "CNY",
        "period": period,
        **extra,
    }


DEMO_TERMS: list[tuple[str, str, dict[str, object]]] = [
    ("ICBC", "WLT", _terms((500, 90), (500, 85), "monthly", credit_limit_minor=50_000_000)),
    ("CEA", "BOC", _terms((1000, 95), (1000, 90), "weekly", funding="prepaid")),
    ("LUCKIN", "WLT", _terms((500, 100), (500, 92), "daily")),
    ("LUCKIN", "JFB", _terms((100, 100), (100, 95), "daily")),
]

_OPERATOR = Principal(key_id=0, name="demo", scopes=frozenset({"ledger:admin"}), programs=None)


async def load_demo(db: Database) -> list[str]:
    """Creates the demo programs and partners if the ledger has no program yet; returns the codes
    created."""
    async with db.driver() as conn:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger.programs)"):
            return []
    created = []
    for spec in DEMO_PROGRAMS:
        program = await service.create_program(
            db, ProgramIn.model_validate({"timezone": DEMO_TIMEZONE, **spec})
        )
        created.append(program.code)
    since = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC).isoformat()
    for partner in DEMO_PARTNERS:
        created.append((await partners.create_partner(db, PartnerIn.model_validate(partner))).code)
    for code, program_code, terms in DEMO_TERMS:
        body = TermsIn.model_validate({**terms, "effective_from": since})
        await partners.put_terms(db, _OPERATOR, code, program_code, body)
    return created
