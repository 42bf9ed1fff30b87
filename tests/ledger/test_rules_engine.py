"""Pricing rules as pure functions: no database."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest

from ledger_service.postings.schemas import Purchase
from ledger_service.rules.engine import BASIC, Member, price, round_points
from ledger_service.rules.schemas import RuleSetIn

NOV = datetime(2026, 11, 15, tzinfo=UTC)


def rules(**overrides) -> RuleSetIn:
    body = {
        "effective_from": "2026-01-01T00:00:00Z",
        "base": {"points": 1, "per_amount_minor": 100},
        **overrides,
    }
    return RuleSetIn.model_validate(body)


def buy(amount: int, **kw) -> Purchase:
    return Purchase(amount_minor=amount, currency="CNY", **kw)


def test_design_example_123_45_cny_at_10x_earns_1234() -> None:
    rs = rules(rules=[{"name": "10x", "match": {"merchant_id": "M1"}, "multiplier": "10"}])
    assert price(rs, 1, buy(12345, merchant_id="M1"), BASIC, NOV).points == 1234
    assert price(rs, 1, buy(12345, merchant_id="M2"), BASIC, NOV).points == 123


def test_multipliers_do_not_stack_the_highest_applies_bonuses_add() -> None:
    rs = rules(
        rules=[
            {"name": "app 2x", "match": {"channel": "app"}, "multiplier": "2"},
            {"name": "grocery 3x", "match": {"mcc": ["5411", "5412"]}, "multiplier": "3"},
            {"name": "grocery bonus", "match": {"mcc": "5411"}, "bonus_points": 50},
            {"name": "app bonus", "match": {"channel": "app"}, "bonus_points": 7},
        ]
    )
    p = price(rs, 1, buy(1000, channel="app", mcc="5411"), BASIC, NOV)
    assert p.points == 10 * 3 + 50 + 7
    assert p.breakdown["multiplier"] == {"rule": "grocery 3x", "value": "3"}
    assert [b["rule"] for b in p.breakdown["bonuses"]] == ["grocery bonus", "app bonus"]


def test_tier_rules_match_only_that_tier() -> None:
    rs = rules(rules=[{"name": "gold 5x", "match": {"tier": ["gold", "diamond"]}, "multiplier": "5"}])
    assert price(rs, 1, buy(1000), Member("gold"), NOV).points == 50
    assert price(rs, 1, buy(1000), Member("silver"), NOV).points == 10


def test_a_rule_needs_every_given_key() -> None:
    rs = rules(rules=[{"name": "x", "match": {"merchant_id": "M1", "channel": "pos"}, "multiplier": "4"}])
    assert price(rs, 1, buy(1000, merchant_id="M1", channel="pos"), BASIC, NOV).points == 40
    assert price(rs, 1, buy(1000, merchant_id="M1", channel="app"), BASIC, NOV).points == 10
    assert price(rs, 1, buy(1000, merchant_id="M1"), BASIC, NOV).points == 10


def test_campaign_windows_are_half_open() -> None:
    rs = rules(
        rules=[
            {
                "name": "November 10x",
                "match": {"merchant_id": "M1"},
                "multiplier": "10",
                "active_from": "2026-11-01T00:00:00Z",
                "active_to": "2026-12-01T00:00:00Z",
            }
        ]
    )
    at = datetime.fromisoformat
    assert price(rs, 1, buy(100, merchant_id="M1"), BASIC, at("2026-10-31T23:59:59+00:00")).points == 1
    assert price(rs, 1, buy(100, merchant_id="M1"), BASIC, at("2026-11-01T00:00:00+00:00")).points == 10
    assert price(rs, 1, buy(100, merchant_id="M1"), BASIC, at("2026-11-30T23:59:59+00:00")).points == 10
    assert price(rs, 1, buy(100, merchant_id="M1"), BASIC, at("2026-12-01T00:00:00+00:00")).points == 1


def test_rounding_happens_once_after_the_multiplier() -> None:
    # 0.5 points per CNY at 3x on 1.50 CNY: 2.25 -> 2 (rounding before the multiplier would give 0 or 3)
    rs = rules(
        base={"points": 1, "per_amount_minor": 200},
        rules=[{"name": "3x", "match": {"channel": "pos"}, "multiplier": "3"}],
    )
    assert price(rs, 1, buy(150, channel="pos"), BASIC, NOV).points == 2
    up = rules(base={"points": 1, "per_amount_minor": 200, "rounding": "up"})
    assert price(up, 1, buy(150), BASIC, NOV).points == 1
    half = rules(base={"points": 1, "per_amount_minor": 200, "rounding": "half_up"})
    assert price(half, 1, buy(100), BASIC, NOV).points == 1  # 0.5 -> 1
    assert price(half, 1, buy(99), BASIC, NOV).points == 0  # 0.495 -> 0


@pytest.mark.parametrize(
    ("value", "mode", "expected"),
    [
        (Fraction(7, 2), "down", 3),
        (Fraction(7, 2), "up", 4),
        (Fraction(7, 2), "half_up", 4),
        (Fraction(10, 3), "half_up", 3),
        (Fraction(6, 2), "up", 3),
        (Fraction(0), "up", 0),
    ],
)
def test_round_points(value: Fraction, mode: str, expected: int) -> None:
    assert round_points(value, mode) == expected


def test_fractional_multiplier_is_exact() -> None:
    rs = rules(rules=[{"name": "1.5x", "match": {"channel": "online"}, "multiplier": "1.5"}])
    assert price(rs, 1, buy(333, channel="online"), BASIC, NOV).points == 4  # 4.995 -> 4


def test_per_transaction_cap_applies_last() -> None:
    rs = rules(
        rules=[{"name": "bonus", "match": {"channel": "pos"}, "bonus_points": 500}],
        caps={"per_transaction": 600},
    )
    p = price(rs, 1, buy(20000, channel="pos"), BASIC, NOV)
    assert p.points == 600
    assert p.breakdown["caps_applied"] == [{"cap": "per_transaction", "limit": 600, "points_after": 600}]


@pytest.mark.parametrize(
    "bad",
    [
        {"base": {"points": -1, "per_amount_minor": 100}},
        {"base": {"points": 1, "per_amount_minor": 0}},
        {"rules": [{"name": "x", "match": {}, "multiplier": "2"}]},
        {"rules": [{"name": "x", "match": {"channel": "pos"}}]},
        {"rules": [{"name": "x", "match": {"channel": "pos"}, "multiplier": "-2"}]},
        {"rules": [{"name": "x", "match": {"channel": "fax"}, "multiplier": "2"}]},
        {
            "rules": [
                {
                    "name": "x",
                    "match": {"channel": "pos"},
                    "multiplier": "2",
                    "active_from": "2026-02-01T00:00:00Z",
                    "active_to": "2026-01-01T00:00:00Z",
                }
            ]
        },
        {"rules": [{"name": "x", "match": {"mcc": "54"}, "multiplier": "2"}]},
        {"caps": {"per_transaction": 0}},
        {
            "rules": [
                {"name": "x", "match": {"channel": "pos"}, "multiplier": "2"},
                {"name": "x", "match": {"channel": "app"}, "multiplier": "3"},
            ]
        },
    ],
)
def test_rule_validation(bad) -> None:
    with pytest.raises(ValueError):
        rules(**bad)


def test_a_segment_rule_prices_only_members_of_the_segment() -> None:
    rs = rules(
        rules=[{"name": "dormant 2x", "match": {"segment": ["dormant-hv", "lapsed"]}, "multiplier": "2"}]
    )
    inside = price(rs, 1, buy(1000), Member("basic", frozenset({"lapsed", "other"})), NOV)
    assert inside.points == 20 and inside.breakdown["matched_segments"] == ["lapsed"]
    outside = price(rs, 1, buy(1000), Member("basic", frozenset({"other"})), NOV)
    assert outside.points == 10 and outside.breakdown["matched_segments"] == []
    assert price(rs, 1, buy(1000), BASIC, NOV).points == 10
