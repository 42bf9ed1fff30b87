"""Rules that name tiers or segments: an earn carries a price for each member it could be and the
ledger picks the member's in the earn's transaction (ledger.stage_earns). It must price exactly as
reading the member first does (the dry run, engine.price), for every tier and segment combination."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledger_service.postings.schemas import Purchase
from ledger_service.rules import engine
from ledger_service.rules.schemas import RuleSetIn
from tests.conftest import create_program, earn, post

TIERS = [{"code": "silver", "min_points": 100000}, {"code": "gold", "min_points": 500000}]
RULES: dict[str, Any] = {
    "base": {"points": 1, "per_amount_minor": 100, "rounding": "half_up"},
    "rules": [
        {"name": "gold 2x", "match": {"tier": "gold"}, "multiplier": "2"},
        {"name": "vip 3x", "match": {"segment": "vip"}, "multiplier": "3"},
        {"name": "welcome back", "match": {"segment": ["lapsed", "vip"]}, "bonus_points": 7,
         "pending_days": 3},
        {"name": "coffee lapsed", "bonus_points": 11,
         "match": {"merchant_id": "M1", "tier": ["silver", "gold"], "segment": "lapsed"}},
        {"name": "coffee 1.5x", "match": {"merchant_id": "M1"}, "multiplier": "1.5"},
        {"name": "nobody", "match": {"merchant_id": "M2", "tier": []}, "bonus_points": 1000},
    ],
}  # fmt: skip
SEGMENTS = ("vip", "lapsed")
NOBODY = {"all": [{"field": "balance", "op": "gte", "value": 10**15}]}


async def _program(client: httpx.AsyncClient, ledger_app: Any) -> str:
    program = await create_program(client, tiers=TIERS)
    for code in SEGMENTS:
        r = await client.post(
            f"/v1/programs/{program}/segments", json={"code": code, "name": code, "criteria": NOBODY}
        )
        assert r.status_code == 201, r.text
    body = {**RULES, "effective_from": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    assert (await client.post(f"/v1/programs/{program}/rules", json=body)).status_code == 201
    return program


async def _place(ledger_app: Any, program: str, member: str, tier: str, segments: tuple[str, ...]) -> None:
    """The member's tier and segments set directly: this test is about pricing, not how they are made."""
    async with ledger_app.state.db.driver() as conn:
        await conn.execute(
            """UPDATE ledger.accounts a SET tier = $3 FROM ledger.programs g
               WHERE g.id = a.program_id AND g.code = $1 AND a.kind = 'member' AND a.member_ref = $2""",
            program, member, tier,
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO ledger.segment_members (segment_id, account_id, member_ref)
               SELECT s.id, a.id, a.member_ref FROM ledger.segments s JOIN ledger.accounts a
                 ON a.program_id = s.program_id AND a.kind = 'member' AND a.member_ref = $2
               JOIN ledger.programs g ON g.id = s.program_id
               WHERE g.code = $1 AND s.code = ANY ($3::text[])""",
            program, member, list(segments),
        )  # fmt: skip


async def test_every_tier_and_segment_combination_prices_as_the_dry_run(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await _program(client, ledger_app)
    combos = list(itertools.product(["basic", "silver", "gold"], [(), ("vip",), ("lapsed",), SEGMENTS]))
    seen_points = set()
    for n, (tier, segments) in enumerate(combos):
        member = f"m{n}"
        await earn(client, program, member, 1)  # the account exists
        await _place(ledger_app, program, member, tier, segments)
        for merchant in ("M1", "M2"):
            purchase = {"amount_minor": 12345, "currency": "CNY", "merchant_id": merchant}
            dry = await client.post(
                f"/v1/programs/{program}/rules/evaluate", json={"member_ref": member, "purchase": purchase}
            )
            assert dry.status_code == 200, dry.text
            r = await post(
                client,
                "/v1/earn",
                {"program": program, "member_ref": member, "purchase": purchase, "reference": "x"},
            )
            assert r.status_code == 201, r.text
            assert r.json()["points"] == dry.json()["points"], (tier, segments, merchant)
            assert r.json()["breakdown"] == dry.json()["breakdown"], (tier, segments, merchant)
            seen_points.add(r.json()["points"])
    assert len(seen_points) >= 8  # the combinations really priced differently


async def test_a_new_member_is_basic_and_in_no_segment(client: httpx.AsyncClient, ledger_app: Any) -> None:
    program = await _program(client, ledger_app)
    purchase = {"amount_minor": 10000, "currency": "CNY", "merchant_id": "M2"}
    r = await post(
        client, "/v1/earn", {"program": program, "member_ref": "new", "purchase": purchase, "reference": "x"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["points"] == 100 and body["breakdown"]["tier"] == "basic"
    assert body["breakdown"]["matched_segments"] == [] and body["breakdown"]["matched_rules"] == []


def test_variants_are_the_prices_of_the_members_they_stand_for() -> None:
    rules = RuleSetIn.model_validate({**RULES, "effective_from": "2020-01-01T00:00:00Z"})
    at = datetime(2026, 1, 1, tzinfo=UTC)
    purchase = Purchase.model_validate({"amount_minor": 999, "currency": "CNY", "merchant_id": "M1"})
    found = engine.price_variants(rules, 1, purchase, at)
    assert found is not None and len(found.conditions) == 4  # the member rules that match M1
    for tier, segments in itertools.product(
        ["basic", "silver", "gold"], [(), ("vip",), ("lapsed",), SEGMENTS]
    ):
        member = engine.Member(tier, frozenset(segments))
        mask = sum(
            1 << k
            for k, c in enumerate(found.conditions)
            if ("tiers" not in c or tier in c["tiers"])
            and ("segments" not in c or set(c["segments"]) & set(segments))
        )
        want = engine.price(rules, 1, purchase, member, at)
        got = found.variants[mask]
        assert got["points"] == want.points
        tail = {"tier": tier, "matched_segments": sorted(set(got["segments"]) & set(segments))}
        assert {**found.shared, **got["breakdown"], **tail} == want.breakdown


def test_too_many_member_rules_are_priced_after_reading_the_member() -> None:
    many = [{"name": f"t{k}", "match": {"tier": "gold"}, "bonus_points": k + 1} for k in range(5)]
    rules = RuleSetIn.model_validate({**RULES, "rules": many, "effective_from": "2020-01-01T00:00:00Z"})
    purchase = Purchase.model_validate({"amount_minor": 999, "currency": "CNY"})
    assert engine.price_variants(rules, 1, purchase, datetime(2026, 1, 1, tzinfo=UTC)) is None


async def test_the_points_limit_holds_for_the_members_variant(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """The limit is checked on the points the member gets, which only the ledger knows: a vip's 3x goes
    over it, a basic member's earn of the same purchase does not; a retry replays either answer."""
    program = await create_program(client, tiers=TIERS, max_points_per_transaction=300)
    r = await client.post(
        f"/v1/programs/{program}/segments", json={"code": "vip", "name": "vip", "criteria": NOBODY}
    )
    assert r.status_code == 201, r.text
    rules = {"base": RULES["base"], "rules": [RULES["rules"][1]], "effective_from": "2020-01-01T00:00:00Z"}
    assert (await client.post(f"/v1/programs/{program}/rules", json=rules)).status_code == 201
    for member in ("plain", "vip"):
        await earn(client, program, member, 1)
    await _place(ledger_app, program, "vip", "basic", ("vip",))
    purchase = {"amount_minor": 15000, "currency": "CNY"}  # 150 points, 450 at 3x
    for member, status in (("plain", 201), ("vip", 422)):
        body = {"program": program, "member_ref": member, "purchase": purchase, "reference": "x"}
        first = await post(client, "/v1/earn", body, key=f"limit-{member}")
        assert first.status_code == status, first.text
        again = await post(client, "/v1/earn", body, key=f"limit-{member}")
        assert (again.status_code, again.json()) == (status, first.json())
    assert first.json()["code"] == "points_limit_exceeded"
    r = await client.get(f"/v1/programs/{program}/members/vip")
    assert r.json()["balance"] == 1


async def test_concurrent_variant_earns_at_one_member_all_count(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await _program(client, ledger_app)
    await earn(client, program, "hot", 1)
    await _place(ledger_app, program, "hot", "gold", ("vip",))
    purchase = {"amount_minor": 10000, "currency": "CNY", "merchant_id": "M2"}
    body = {"program": program, "member_ref": "hot", "purchase": purchase, "reference": "x"}
    answers = await asyncio.gather(*(post(client, "/v1/earn", body) for _ in range(60)))
    assert {r.status_code for r in answers} == {201}
    points = {r.json()["points"] for r in answers}
    assert points == {307}, points  # 100 x 3 (vip beats gold's 2x) + 7 welcome back
    member = (await client.get(f"/v1/programs/{program}/members/hot")).json()
    assert (member["balance"], member["pending"]) == (1 + 60 * 307, 60 * 307)  # welcome back's 3 days
