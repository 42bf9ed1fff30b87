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


def matches_purchase(match: Match, purchase: Purchase) -> bool:
    return (
        _listed(match.merchant_id, purchase.merchant_id)
        and _listed(match.mcc, purchase.mcc)
        and _listed(match.channel, purchase.channel)
    )


def names_member(match: Match) -> bool:
    return match.tier is not None or match.segment is not None


def matches(match: Match, purchase: Purchase, member: Member) -> bool:
    return (
        matches_purchase(match, purchase)
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
    return any(names_member(r.match) for r in rule_set.rules)


def price(rule_set: RuleSetIn, version: int, purchase: Purchase, member: Member, at: datetime) -> Priced:
    hits = [r for r in rule_set.rules if active(r, at) and matches(r.match, purchase, member)]
    points, part = _by_rules(rule_set, purchase, hits)
    breakdown = _shared(rule_set, version, purchase) | part
    breakdown["tier"] = member.tier
    breakdown["matched_segments"] = sorted(_segments(hits) & member.segments)
    return Priced(points, breakdown)


# More rules naming the member than this, and an earn is priced after reading the member instead.
MAX_MEMBER_CONDITIONS = 4


@dataclass(frozen=True)
class Variants:
    """A purchase priced for every member it could be, so that the ledger picks the price in the
    earn's own statement instead of a read of the member before it. `conditions` are the rules
    that match the purchase and name the member (tier, segments); variant `mask` is the price when
    exactly the conditions whose bit is set in `mask` hold. A variant's breakdown holds what its
    rules decide, `shared` what no rule changes; `tier` and `matched_segments` are left to the
    ledger, and each variant's `segments` lists the segments its rules name."""

    conditions: list[dict[str, list[str]]]
    variants: list[dict[str, Any]]
    shared: dict[str, Any]


def price_variants(rule_set: RuleSetIn, version: int, purchase: Purchase, at: datetime) -> Variants | None:
    """None when more than MAX_MEMBER_CONDITIONS rules would need deciding."""
    candidates = [r for r in rule_set.rules if active(r, at) and matches_purchase(r.match, purchase)]
    named = [r for r in candidates if names_member(r.match)]
    if len(named) > MAX_MEMBER_CONDITIONS:
        return None
    conditions = []
    for r in named:
        named_by = (("tiers", r.match.tier), ("segments", r.match.segment))
        conditions.append({k: sorted(_wanted(v)) for k, v in named_by if v is not None})
    variants = []
    for mask in range(1 << len(named)):
        held = {id(r) for k, r in enumerate(named) if mask >> k & 1}  # by identity: two rules may be alike
        hits = [r for r in candidates if not names_member(r.match) or id(r) in held]
        points, part = _by_rules(rule_set, purchase, hits)
        variants.append({"points": points, "breakdown": part, "segments": sorted(_segments(hits))})
    return Variants(conditions, variants, _shared(rule_set, version, purchase))


def _segments(hits: list[Rule]) -> set[str]:
    return set().union(*(_wanted(r.match.segment) for r in hits))


def _shared(rule_set: RuleSetIn, version: int, purchase: Purchase) -> dict[str, Any]:
    """The breakdown's part that no rule changes."""
    base = rule_set.base
    return {
        "rule_set_version": version,
        "amount_minor": purchase.amount_minor,
        "base": {"points": base.points, "per_amount_minor": base.per_amount_minor},
        "base_points": round_ratio(purchase.amount_minor * base.points, base.per_amount_minor, base.rounding),
        "rounding": base.rounding,
    }


def _by_rules(rule_set: RuleSetIn, purchase: Purchase, hits: list[Rule]) -> tuple[int, dict[str, Any]]:
    """The points of a purchase when exactly `hits` match, and the breakdown's part they decide."""
    base = rule_set.base
    # Integer arithmetic only: amount * points * multiplier / per_amount, rounded once.
    raw = purchase.amount_minor * base.points
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
    part: dict[str, Any] = {
        "multiplier": {"rule": best.name if best else None, "value": str(best.multiplier) if best else "1"},
        "multiplied_points": multiplied,
        "bonuses": bonuses,
        "matched_rules": [r.name for r in hits],
        "caps_applied": caps_applied,
        "points": total,
    }
    pending = [r.pending_days for r in hits if r.pending_days is not None]
    if pending:  # absent: the program's pending_days
        part["pending_days"] = max(pending)
    return total, part
