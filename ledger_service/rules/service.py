"""Earning rules: versions managed through the API, and pricing of purchases for earns."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger_service.postings.schemas import Purchase
from ledger_service.rules import engine, repository
from ledger_service.rules.schemas import RuleSetIn, RuleSetList, RuleSetOut
from services.db import Database
from services.errors import Conflict, NotFound, Unprocessable

CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class Version:
    id: int
    version: int
    effective_from: datetime
    rules: RuleSetIn
    created_at: datetime


@dataclass(frozen=True)
class ProgramRules:
    currency: str
    versions: tuple[Version, ...]  # by version, so by effective_from

    def at(self, when: datetime) -> Version | None:
        found = None
        for v in self.versions:
            if v.effective_from <= when:
                found = v
        return found


@dataclass(frozen=True)
class PricedEarn:
    points: int
    breakdown: dict[str, Any]
    rule_set_id: int
    member_caps: dict[str, int] | None


@dataclass(frozen=True)
class VariantEarn:
    """An earn priced for each member it could be; the ledger picks (ledger.stage_earns)."""

    variants: engine.Variants
    rule_set_id: int
    member_caps: dict[str, int] | None


def _missing(code: str) -> NotFound:
    return NotFound(f"No program with code {code}.", code="program_not_found")


def _out(code: str, row: Any) -> RuleSetOut:
    body = orjson.loads(row["body"])
    return RuleSetOut.model_validate(
        {**body, "program": code, "version": row["version"], "created_at": row["created_at"]}
    )


class MemberFacts:
    """Tier and segments of members, for rules that match them. Concurrent earns share lookups: the
    members asked for while one query runs are read together by the next, one connection at a time,
    so a segment-matching rule costs a share of a query per earn, not a query and a pooled
    connection of its own (which the posting engine's group commit would wait for)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: dict[str, list[tuple[str, asyncio.Future[engine.Member]]]] = {}
        self._running: asyncio.Task[None] | None = None

    async def get(self, code: str, member_ref: str) -> engine.Member:
        future: asyncio.Future[engine.Member] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(code, []).append((member_ref, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, {}
                for code, asked in waiting.items():
                    try:
                        async with self.db.driver() as conn:
                            found = await repository.members(conn, code, sorted({ref for ref, _ in asked}))
                    except Exception as exc:  # every earn waiting on it gets the error, as if it asked
                        for _, future in asked:
                            if not future.done():
                                future.set_exception(exc)
                        continue
                    for ref, future in asked:
                        if not future.done():
                            future.set_result(found.get(ref, engine.BASIC))
        finally:
            self._running = None


class RuleBook:
    """Rule versions per program, cached for a few seconds per process. A new version is normally
    created ahead of its effective_from, so the short cache does not delay it in practice."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, ProgramRules]] = {}
        self.members = MemberFacts(db)

    def forget(self, code: str) -> None:
        self._cache.pop(code, None)

    async def program_rules(self, code: str) -> ProgramRules:
        hit = self._cache.get(code)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.db.driver() as conn:
            rows = await repository.all_versions(conn, code)
        if not rows:
            raise _missing(code)
        versions = tuple(
            Version(r["id"], r["version"], r["effective_from"], RuleSetIn.model_validate_json(r["body"]),
                    r["created_at"])
            for r in rows
            if r["id"] is not None
        )  # fmt: skip
        rules = ProgramRules(rows[0]["currency"], versions)
        self._cache[code] = (now + CACHE_TTL_S, rules)
        return rules

    async def _version(self, code: str, purchase: Purchase, when: datetime) -> Version:
        rules = await self.program_rules(code)
        version = rules.at(when)
        if version is None:
            raise Unprocessable(
                f"Program {code} has no earning rules in force at {when.isoformat()}; send points.",
                code="no_earning_rules",
            )
        if purchase.currency != rules.currency:
            raise Unprocessable(
                f"Program {code} prices purchases in {rules.currency}, not {purchase.currency}.",
                code="currency_mismatch",
            )
        return version

    async def price(self, code: str, member_ref: str, purchase: Purchase, at: datetime | None) -> PricedEarn:
        """The price for this member, read first when a rule names tiers or segments (a dry run)."""
        when = at or datetime.now(UTC)
        version = await self._version(code, purchase, when)
        member = engine.BASIC
        if engine.needs_member(version.rules):
            member = await self.members.get(code, member_ref)
        priced = engine.price(version.rules, version.version, purchase, member, when)
        return PricedEarn(priced.points, priced.breakdown, version.id, _member_caps(version.rules))

    async def price_earn(
        self, code: str, member_ref: str, purchase: Purchase, at: datetime
    ) -> PricedEarn | VariantEarn:
        """The price of an earn. When rules name tiers or segments, the member is not read here: the
        earn carries a price for each case and the ledger picks the member's in the earn's own
        transaction (one round trip, as for any earn), unless too many rules would need deciding."""
        version = await self._version(code, purchase, at)
        if engine.needs_member(version.rules):
            variants = engine.price_variants(version.rules, version.version, purchase, at)
            if variants is not None:
                return VariantEarn(variants, version.id, _member_caps(version.rules))
            member = await self.members.get(code, member_ref)
        else:
            member = engine.BASIC
        priced = engine.price(version.rules, version.version, purchase, member, at)
        return PricedEarn(priced.points, priced.breakdown, version.id, _member_caps(version.rules))


def _member_caps(rules: RuleSetIn) -> dict[str, int] | None:
    caps = rules.caps
    found = {"per_member_per_day": caps.per_member_per_day, "per_member_per_month": caps.per_member_per_month}
    return {k: v for k, v in found.items() if v is not None} or None


async def create_rule_set(
    db: Database, book: RuleBook, code: str, body: RuleSetIn, api_key_id: int
) -> RuleSetOut:
    async with db.driver() as conn, conn.transaction():
        program = await repository.lock_program(conn, code)  # serializes versions of one program
        if program is None:
            raise _missing(code)
        latest = await repository.latest(conn, program["id"])
        if latest is not None and body.effective_from <= latest["effective_from"]:
            raise Conflict(
                f"Version {latest['version']} is in force from {latest['effective_from'].isoformat()}; "
                "a new version must start after it (versions never overlap and are never edited).",
                code="rule_version_overlap",
            )
        version = 1 if latest is None else latest["version"] + 1
        row = await repository.insert(
            conn, program["id"], version, body.effective_from, body.model_dump_json(), api_key_id
        )
    book.forget(code)
    return _out(code, row)


async def list_rule_sets(book: RuleBook, code: str) -> RuleSetList:
    book.forget(code)
    rules = await book.program_rules(code)
    return RuleSetList(
        data=[
            RuleSetOut.model_validate(
                {**v.rules.model_dump(), "program": code, "version": v.version, "created_at": v.created_at}
            )
            for v in rules.versions
        ]
    )
