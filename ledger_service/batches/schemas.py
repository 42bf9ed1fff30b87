"""Batch status and rejections as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field


class BatchOut(BaseModel):
    id: UUID
    status: Literal["receiving", "received", "processing", "completed", "failed"]
    format: Literal["csv", "ndjson"]
    rows: int = Field(description="Data lines in the file")
    processed: int
    posted: int
    duplicates: int = Field(description="Rows already posted (same issuing key and external_id)")
    rejected: int
    points_posted: int = Field(description="Net points: earns minus reversals")
    progress: float = Field(description="processed / rows, 0 to 1")
    error: str | None
    created_at: datetime
    received_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class Rejection(BaseModel):
    line: int
    external_id: str | None
    reason: str


class RejectionPage(BaseModel):
    data: list[Rejection]
    next_cursor: str | None
