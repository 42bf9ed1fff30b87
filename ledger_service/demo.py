"""Demo data loaded by `jifen run`: the programs, with tiers and earning rules (a campaign among them),
so that every flow of the README works on a fresh database, and coalition partners with their terms (a
bank issuer, an airline that issues and accepts, a coffee chain acceptor). Cash values and prices are
illustrative; every demo program keeps Beijing time.

Idempotent on restart: programs are created only in a ledger without any, earning rules only while
no program has any, partners only while there are none, so a restart changes nothing and the demo
never touches a ledger in real use.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ledger_service.batches.synthetic import PARTNERS
from ledger_service.partners import service as partners
from ledger_service.partners.schemas import PartnerIn, TermsIn
from ledger_service.programs import service
from ledger_service.programs.schemas import ProgramIn
from ledger_service.rules.schemas import RuleSetIn
from ledger_service.rules.service import RuleBook, create_rule_set
from services.auth import Principal
from services.db import Database

DEMO_TIMEZONE = "Asia/Shanghai"

DEMO_PROGRAMS: list[dict[str, object]] = [
    {
        "code": "WLT",
        "name": "Ping An Wanlitong",
        "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "fixed", "month": 12, "day": 31, "years_after": 1},
        "tiers": [{"code": "silver", "min_points": 50000}, {"code": "gold", "min_points": 200000}],
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
        "tiers": [{"code": "gold", "min_points": 20000}, {"code": "platinum", "min_points": 100000}],
    },
    {
        "code": "MU",
        "name": "China Eastern Eastern Miles",
        "cash_value": {"points": 20, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "rolling", "months": 36},
        "tiers": [{"code": "silver", "min_points": 40000}, {"code": "gold", "min_points": 80000}],
    },
]


# A rule set's `effective_from` in the past, so that the rules price purchases of any date the README
# and `jifen batch generate` (yesterday) use.
RULES_FROM = "2020-01-01T00:00:00Z"


def demo_rules(now: datetime) -> dict[str, dict[str, Any]]:
    """Earning rules per program. Campaign windows are relative to when the demo is loaded."""
    campaign = {
        "active_from": (now - timedelta(days=7)).isoformat(),
        "active_to": (now + timedelta(days=90)).isoformat(),
    }
    return {
        "BOC": {  # the card issuer of `jifen batch generate`: 1 point per CNY
            "effective_from": RULES_FROM,
            "base": {"points": 1, "per_amount_minor": 100},
            "rules": [
                {
                    "name": "10x at partner merchants (campaign)",
                    "match": {"merchant_id": list(PARTNERS)},
                    "multiplier": "10",
                    **campaign,
                },
                {"name": "2x on travel", "match": {"mcc": ["4511", "7011"]}, "multiplier": "2"},
                {
                    "name": "3x for platinum at supermarkets",
                    "match": {"mcc": "5411", "tier": "platinum"},
                    "multiplier": "3",
                },
                {"name": "5 bonus points in the app", "match": {"channel": "app"}, "bonus_points": 5},
            ],
            "caps": {"per_transaction": 50000, "per_member_per_day": 200000},
        },
        "WLT": {  # 10 points per CNY (2% back at 500 points = 1 CNY)
            "effective_from": RULES_FROM,
            "base": {"points": 10, "per_amount_minor": 100},
            "rules": [
                {
                    "name": "Double points at partner coffee (campaign)",
                    "match": {"merchant_id": ["M-COFFEE-01", "M-COFFEE-02"]},
                    "multiplier": "2",
                    **campaign,
                },
                {"name": "1.5x for gold", "match": {"tier": "gold"}, "multiplier": "1.5"},
            ],
            "caps": {"per_transaction": 100000},
        },
        "JFB": {
            "effective_from": RULES_FROM,
            "base": {"points": 1, "per_amount_minor": 100},
            "rules": [{"name": "2x in the app", "match": {"channel": "app"}, "multiplier": "2"}],
        },
        "MU": {  # 1 mile per 5 CNY, more on China Eastern itself
            "effective_from": RULES_FROM,
            "base": {"points": 1, "per_amount_minor": 500},
            "rules": [
                {
                    "name": "5x on China Eastern flights",
                    "match": {"merchant_id": "M-MU-FLIGHTS"},
                    "multiplier": "5",
                },
                {"name": "2x for gold", "match": {"tier": "gold"}, "multiplier": "2"},
            ],
        },
    }


DEMO_PARTNERS: list[dict[str, object]] = [
    {"code": "ICBC", "name": "ICBC credit cards", "roles": ["issuer"]},
    {"code": "CEA", "name": "China Eastern Airlines", "roles": ["issuer", "acceptor"]},
    {"code": "LUCKIN", "name": "Luckin Coffee", "roles": ["acceptor"]},
]


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


# (partner, program, terms): the bank buys WLT points monthly on credit; the airline prepays its BOC
# points weekly and accepts them for seats; the coffee chain takes WLT and JFB at the counter, daily.
DEMO_TERMS: list[tuple[str, str, dict[str, object]]] = [
    ("ICBC", "WLT", _terms((500, 90), (500, 85), "monthly", credit_limit_minor=50_000_000)),
    ("CEA", "BOC", _terms((1000, 95), (1000, 90), "weekly", funding="prepaid")),
    ("LUCKIN", "WLT", _terms((500, 100), (500, 92), "daily")),
    ("LUCKIN", "JFB", _terms((100, 100), (100, 95), "daily")),
]

_OPERATOR = Principal(key_id=0, name="demo", scopes=frozenset({"ledger:admin"}), programs=None)


async def load_demo(db: Database, *, now: datetime | None = None) -> list[str]:
    """Loads what is missing of the demo; returns what it loaded, for `jifen run` to print."""
    now = now or datetime.now(UTC)
    loaded = []
    async with db.driver() as conn:
        empty = not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger.programs)")
    if empty:
        for spec in DEMO_PROGRAMS:
            await service.create_program(db, ProgramIn.model_validate({"timezone": DEMO_TIMEZONE, **spec}))
        loaded.append(f"Loaded demo programs: {', '.join(str(spec['code']) for spec in DEMO_PROGRAMS)}")
    rules = demo_rules(now)
    async with db.driver() as conn:
        codes = {
            r["code"]
            for r in await conn.fetch("SELECT code FROM ledger.programs WHERE code = ANY ($1)", list(rules))
        }
        any_rules = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger.rule_sets)")
    if not any_rules and codes == set(rules):
        book = RuleBook(db)
        for code, body in rules.items():
            await create_rule_set(db, book, code, RuleSetIn.model_validate(body), api_key_id=0)
        loaded.append(f"Loaded demo earning rules: {', '.join(rules)}")
    async with db.driver() as conn:
        any_partners = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger.partners)")
    terms_programs = {program for _, program, _ in DEMO_TERMS}
    if not any_partners and terms_programs <= codes | set(await _codes(db, terms_programs)):
        since = datetime(now.year, 1, 1, tzinfo=UTC).isoformat()
        for partner in DEMO_PARTNERS:
            await partners.create_partner(db, PartnerIn.model_validate(partner))
        for code, program_code, terms in DEMO_TERMS:
            version = TermsIn.model_validate({**terms, "effective_from": since})
            await partners.put_terms(db, _OPERATOR, code, program_code, version)
        loaded.append(f"Loaded demo partners: {', '.join(str(p['code']) for p in DEMO_PARTNERS)}")
    return loaded


async def _codes(db: Database, codes: set[str]) -> list[str]:
    async with db.driver() as conn:
        rows = await conn.fetch("SELECT code FROM ledger.programs WHERE code = ANY ($1)", sorted(codes))
    return [r["code"] for r in rows]
