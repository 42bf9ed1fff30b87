"""Ledger operations: the checks that belong before the posting engine, then one engine call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger_service.postings.engine import Outcome, PostingEngine
from ledger_service.postings.schemas import (
    AdjustmentIn,
    BurnIn,
    CaptureIn,
    EarnIn,
    HoldIn,
    ReverseIn,
    TransferIn,
    VoidIn,
)
from ledger_service.rules.service import RuleBook, VariantEarn
from services.auth import Principal
from services.errors import Unprocessable

MAX_CLOCK_SKEW = timedelta(minutes=5)
# Burns and captures may be dated back this far (offline terminals, DESIGN §8).
MAX_BACKDATE = timedelta(days=30)


def _at_partner(args: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """The request's partner: the one it names or its key's; a partner-bound key names no other."""
    partner = principal.acting_partner(args.get("partner"))
    if partner is not None:
        args["partner"] = partner
    return args


def _backdated(at: datetime | None) -> None:
    if at is None:
        return
    now = datetime.now(UTC)
    if at > now + MAX_CLOCK_SKEW or at < now - MAX_BACKDATE:
        raise Unprocessable(
            "occurred_at of a burn or capture must be within the last 30 days.",
            code="occurred_at_out_of_range",
        )


async def earn(
    engine: PostingEngine, rules: RuleBook, body: EarnIn, principal: Principal, key: str
) -> Outcome:
    """Explicit points are posted as given; a purchase alone is priced by the rules in force at
    occurred_at, and the per-member caps are applied by the posting engine under the member's lock."""
    principal.require_program(body.program)
    now = datetime.now(UTC)
    if body.occurred_at is not None and body.occurred_at > now + MAX_CLOCK_SKEW:
        raise Unprocessable("occurred_at is in the future.", code="occurred_in_future")
    args = _at_partner(body.model_dump(mode="json", exclude_none=True), principal)
    derived: dict[str, Any] | None = None
    if body.points is None:
        assert body.purchase is not None
        at = body.occurred_at or now
        priced = await rules.price_earn(body.program, body.member_ref, body.purchase, at)
        derived = {"rule_set_id": priced.rule_set_id, "occurred_at": at.isoformat()}
        if isinstance(priced, VariantEarn):
            derived["conditions"] = priced.variants.conditions
            derived["variants"] = priced.variants.variants
            derived["shared"] = priced.variants.shared
        else:
            derived["points"] = priced.points
            derived["breakdown"] = priced.breakdown
            if "pending_days" in priced.breakdown:
                derived["pending_days"] = priced.breakdown["pending_days"]
        if priced.member_caps:
            derived["caps"] = priced.member_caps
    return await engine.execute("earn", args, principal, key, derived)


async def burn(engine: PostingEngine, body: BurnIn, principal: Principal, key: str) -> Outcome:
    principal.require_program(body.program)
    _backdated(body.occurred_at)
    args = _at_partner(body.model_dump(mode="json", exclude_none=True), principal)
    return await engine.execute("burn", args, principal, key)


async def hold(engine: PostingEngine, body: HoldIn, principal: Principal, key: str) -> Outcome:
    principal.require_program(body.program)
    args = _at_partner(body.model_dump(mode="json", exclude_none=True), principal)
    return await engine.execute("hold", args, principal, key)


async def capture(
    engine: PostingEngine, hold_id: UUID, body: CaptureIn, principal: Principal, key: str
) -> Outcome:
    _backdated(body.occurred_at)
    args = {"hold_id": str(hold_id), **body.model_dump(mode="json", exclude_none=True)}
    if principal.partner is not None:  # the hold must be at the key's partner (checked in SQL)
        args["acting_partner"] = principal.partner
    return await engine.execute("capture", args, principal, key)


async def void(engine: PostingEngine, hold_id: UUID, body: VoidIn, principal: Principal, key: str) -> Outcome:
    args = {"hold_id": str(hold_id), **body.model_dump(mode="json", exclude_none=True)}
    return await engine.execute("void", args, principal, key)


async def reverse(
    engine: PostingEngine, transaction_id: UUID, body: ReverseIn, principal: Principal, key: str
) -> Outcome:
    args = {"transaction_id": str(transaction_id), **body.model_dump(mode="json", exclude_none=True)}
    if principal.partner is not None:  # the original must be at the key's partner (checked in SQL)
        args["acting_partner"] = principal.partner
    return await engine.execute("reverse", args, principal, key)


async def transfer(engine: PostingEngine, body: TransferIn, principal: Principal, key: str) -> Outcome:
    principal.require_program(body.program)
    return await engine.execute("transfer", body.model_dump(mode="json", exclude_none=True), principal, key)


async def adjust(engine: PostingEngine, body: AdjustmentIn, principal: Principal, key: str) -> Outcome:
    principal.require_program(body.program)
    return await engine.execute("adjust", body.model_dump(mode="json", exclude_none=True), principal, key)
