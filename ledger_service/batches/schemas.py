"""Batch status and rejections as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

BatchStatus = Literal["receiving", "received", "processing", "completed", "failed"]

# Every reason a row can be rejected for: the parser's (parsing.py), the pricer's (service.py), the
# partner checks', and the reverse rows' (sql/batches.sql: the original's state, or the ledger's
# refusal of the reversal).
# `/rejections?reason=` takes one of these; tests/ledger/test_batch_ops.py keeps the list complete.
PARSE_REASONS = (
    "malformed_line", "malformed_external_id", "malformed_type", "malformed_original_external_id",
    "malformed_program", "needs_member_ref_or_card_number", "malformed_card_number", "malformed_member_ref",
    "bad_amount", "bad_currency", "malformed_merchant_id", "malformed_mcc", "malformed_channel",
    "malformed_occurred_at", "occurred_in_future", "bad_points", "needs_points_or_amount_and_currency",
    "malformed_partner",
)  # fmt: skip
PRICE_REASONS = (
    "unknown_program",
    "currency_mismatch",
    "no_earning_rules",
    "program_forbidden",
    "partner_forbidden",
)
# Earn rows at a partner (sql/batches.sql, sql/partners.sql): the partner may not fund it, or is out of
# prepaid points or credit.
PARTNER_REASONS = (
    "partner_not_found", "partner_suspended", "partner_role_missing", "partner_terms_missing",
    "partner_funds_exhausted", "partner_credit_exceeded",
)  # fmt: skip
REVERSE_REASONS = (
    "unknown_original", "nothing_to_reverse", "transaction_not_found", "not_reversible", "insufficient_scope",
    "reversal_exceeds_original", "insufficient_points", "points_out_of_range", "idempotency_key_reused",
    "clawback_not_pending",
)  # fmt: skip
# Codes DESIGN §4 "Changes in force" gives for rows the parser or the ledger may refuse.
CONTRACT_REASONS = ("occurred_at_out_of_range", "invalid_text", "points_limit_exceeded")
REJECTION_REASONS = PARSE_REASONS + PRICE_REASONS + PARTNER_REASONS + REVERSE_REASONS + CONTRACT_REASONS


class BatchOut(BaseModel):
    id: UUID
    status: BatchStatus
    format: Literal["csv", "ndjson"]
    rows: int = Field(description="Data rows in the file (the header and blank lines not counted)")
    processed: int
    posted: int
    duplicates: int = Field(description="Rows already posted (same issuing key and external_id)")
    rejected: int
    points_posted: int = Field(description="Net points: earns minus reversals")
    rejected_by_reason: dict[str, int] = Field(
        default_factory=dict,
        description="Rejected rows per reason, most frequent first",
        examples=[{"no_earning_rules": 12, "malformed_line": 1}],
    )
    progress: float = Field(description="processed / rows, 0 to 1")
    error: str | None
    created_at: datetime
    received_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class BatchList(BaseModel):
    data: list[BatchOut]
    next_cursor: str | None


class Rejection(BaseModel):
    line: int = Field(description="The line number in the uploaded file (a CSV header is line 1)")
    external_id: str | None
    reason: str


class RejectionPage(BaseModel):
    data: list[Rejection]
    next_cursor: str | None
