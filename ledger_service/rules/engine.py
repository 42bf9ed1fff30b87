"""Pricing a purchase under a rule set: pure functions, no database.

Order (DESIGN §4): base rate; the highest matching multiplier (they do not stack); one rounding,
after the multiplier; matching fixed bonuses add; the per-transaction cap. Matching rules with
pending_days give the earn the longest of them (DESIGN §10). Per-member caps apply
last, in the posting engine, under the member's row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from ledger_service.postings.schemas import Purchase
from ledger_service.rules.schemas import Match, Rule, RuleSetIn


@dataclass(frozen=True)
class Member:
    """What rules may match about the member: their tier and the segments they are in."""

    tier: str = "basic"
    segments: frozenset[str] = frozenset()


BASIC = Member()


@dataclass(frozen=True)
class Priced:
    points: int  # after the per-transaction cap, before per-member caps
    breakdown: dict[str, Any]


def _listed(wanted: object, actual: str | None) -> bool:
    if wanted is None:
        return True
    if actual is None:
        return False
    return actual in wanted if isinstance(wanted, list) else actual == wanted


def _wanted(value: str | list[str] | None) -> set[str]:
    return set() if value is None else {value} if isinstance(value, str) else set(value)


def matches(match: Match, purchase: Purchase, member: Member) -> bool:
    return (
        _listed(match.merchant_id, purchase.merchant_id)
        and _listed(match.mcc, purchase.mcc)
        and _listed(match.channel, purchase.channel)
        and _listed(match.tier, member.tier)
        and (match.segment is None or bool(_wanted(match.segment) & member.segments))
    )


def active(rule: Rule, at: datetime) -> bool:
    return (rule.active_from is None or rule.active_from <= at) and (
        rule.active_to is None or at < rule.active_to
    )


def round_points(value: Fraction, rounding: str) -> int:
    return round_ratio(value.numerator, value.denominator, rounding)


def round_ratio(numerator: int, denominator: int, rounding: str) -> int:
    """numerator / denominator (both >= 0, denominator > 0) rounded as the rule set says."""
    if rounding == "up":
        return -((-numerator) // denominator)
    if rounding == "half_up":
        return (2 * numerator + denominator) // (2 * denominator)
    return numerator // denominator


def needs_member(rule_set: RuleSetIn) -> bool:
    """Whether pricing needs the member's tier or segments (one lookup), or matches purchases only."""
    return any(r.match.tier is not None or r.match.segment is not None for r in rule_set.rules)


def price(rule_set: RuleSetIn, version: int, purchase: Purchase, member: Member, at: datetime) -> Priced:
    base = rule_set.base
    # Integer arithmetic only: amount * points * multiplier / per_amount, rounded once.
    raw = purchase.amount_minor * base.points
    hits = [r for r in rule_set.rules if active(r, at) and matches(r.match, purchase, member)]
    best = max((r for r in hits if r.multiplier is not None), key=lambda r: r.multiplier or 0, default=None)
    num, den = (1, 1)
    if best is not None and best.multiplier is not None:
        num, den = best.multiplier.as_integer_ratio()
    multiplied = round_ratio(raw * num, base.per_amount_minor * den, base.rounding)
    bonus_rules = [(r.name, r.bonus_points) for r in hits if r.bonus_points]
    bonuses = [{"rule": name, "points": points} for name, points in bonus_rules]
    total = multiplied + sum(points for _, points in bonus_rules)
    caps_applied: list[dict[str, Any]] = []
    cap = rule_set.caps.per_transaction
    if cap is not None and total > cap:
        caps_applied.append({"cap": "per_transaction", "limit": cap, "points_after": cap})
        total = cap
    breakdown: dict[str, Any] = {
        "rule_set_version": version,
        "amount_minor": purchase.amount_minor,
        "base": {"points": base.points, "per_amount_minor": base.per_amount_minor},
        "base_points": round_ratio(raw, base.per_amount_minor, base.rounding),
        "multiplier": {"rule": best.name if best else None, "value": str(best.multiplier) if best else "1"},
        "rounding": base.rounding,
        "multiplied_points": multiplied,
        "bonuses": bonuses,
        "matched_rules": [r.name for r in hits],
        "tier": member.tier,
        "matched_segments": sorted(set().union(*(_wanted(r.match.segment) for r in hits)) & member.segments),
        "caps_applied": caps_applied,
        "points": total,
    }
    pending = [r.pending_days for r in hits if r.pending_days is not None]
    if pending:  # absent: the program's pending_days
        breakdown["pending_days"] = max(pending)
    return Priced(total, breakdown)
