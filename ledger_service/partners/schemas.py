"""Coalition partners, their terms, fundings and settlement statements (DESIGN §8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ledger_service.schemas_common import Currency, PartnerCode, Points, ProgramCode, Reference
from services.validation import StrictBody, Timestamp, body_examples, check_patch

Role = Literal["issuer", "acceptor"]
Status = Literal["active", "suspended"]
PeriodKind = Literal["daily", "weekly", "monthly"]
Funding = Literal["postpaid", "prepaid"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")


def _unique_roles(roles: list[Role] | None) -> None:
    if roles is not None and len(set(roles)) != len(roles):
        raise ValueError("roles must not repeat")


class PartnerIn(Strict):
    code: PartnerCode
    name: Name = Field(examples=["Industrial and Commercial Bank of China"])
    roles: list[Role] = Field(min_length=1, max_length=2, examples=[["issuer"]])
    status: Status = "active"

    model_config = body_examples(
        {"code": "ICBC", "name": "ICBC credit cards", "roles": ["issuer"]},
    )

    @model_validator(mode="after")
    def _valid(self) -> PartnerIn:
        _unique_roles(self.roles)
        return self


class PartnerPatch(Strict):
    name: Name | None = None
    roles: list[Role] | None = Field(default=None, min_length=1, max_length=2)
    status: Status | None = None

    model_config = body_examples(
        {"status": "suspended"},
    )

    @model_validator(mode="after")
    def _valid(self) -> PartnerPatch:
        _unique_roles(self.roles)
        check_patch(self)
        return self


class PartnerOut(BaseModel):
    code: str
    name: str
    roles: list[Role]
    status: Status
    created_at: datetime
    updated_at: datetime


class PartnerList(BaseModel):
    data: list[PartnerOut]
    next_cursor: str | None


class Price(Strict):
    """`points` points cost (or pay) `cash_minor` minor units of the terms' currency."""

    points: int = Field(strict=True, gt=0, le=10**12, examples=[100])
    cash_minor: int = Field(strict=True, ge=0, le=10**12, examples=[80])


class TermsIn(Strict):
    issue_price: Price = Field(description="What the partner pays per points it issues (earns it funds)")
    accept_price: Price = Field(description="What the operator pays the partner per points spent at it")
    currency: Currency
    period: PeriodKind
    funding: Funding = "postpaid"
    credit_limit_minor: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=10**15,
        description="Postpaid only: the most the partner may owe for issued points of its open period",
    )
    effective_from: Timestamp | None = Field(default=None, description="Default now")

    model_config = body_examples(
        {
            "issue_price": {"points": 100, "cash_minor": 80},
            "accept_price": {"points": 100, "cash_minor": 70},
            "currency": "CNY",
            "period": "monthly",
            "funding": "postpaid",
            "credit_limit_minor": 50_000_000,
        },
    )

    @model_validator(mode="after")
    def _valid(self) -> TermsIn:
        if self.funding == "prepaid" and self.credit_limit_minor is not None:
            raise ValueError("a credit limit applies to postpaid terms only")
        return self


class TermsOut(BaseModel):
    partner: str
    program: str
    version: int
    issue_price: Price
    accept_price: Price
    currency: str
    period: PeriodKind
    funding: Funding
    credit_limit_minor: int | None
    effective_from: datetime
    created_at: datetime


class TermsList(BaseModel):
    data: list[TermsOut]


class FundingIn(Strict):
    program: ProgramCode
    points: Points
    cash_minor: int = Field(strict=True, ge=0, le=10**15, examples=[800_000])
    reference: Reference

    model_config = body_examples(
        {"program": "WLT", "points": 1_000_000, "cash_minor": 800_000, "reference": "PO-2291"},
    )


class FundingOut(BaseModel):
    id: UUID
    partner: str
    program: str
    points: int
    cash_minor: int
    currency: str
    reference: str
    created_at: datetime
    prepaid_points: int = Field(description="The partner's purchased points not yet issued, after this")


class StatementLine(BaseModel):
    id: UUID | None = Field(default=None, description="Absent in an open position")
    settlement_id: UUID | None = None
    partner: str
    program: str
    period_start: datetime
    period_end: datetime
    points_issued: int
    points_issued_reversed: int
    points_accepted: int
    points_accepted_reversed: int
    cash_due_from_partner_minor: int
    cash_due_to_partner_minor: int
    net_minor: int = Field(description="Positive: the partner pays the operator")
    currency: str
    transactions: int


class Settlement(BaseModel):
    id: UUID
    as_of: datetime
    created_at: datetime
    lines: list[StatementLine]


class SettlementList(BaseModel):
    data: list[Settlement]
    next_cursor: str | None


class StatementList(BaseModel):
    data: list[StatementLine]
    next_cursor: str | None


class ProgramPosition(BaseModel):
    program: str
    funding: Funding | None
    currency: str | None
    funded_points: int
    issued_points: int = Field(description="Earned at the partner, less clawbacks, ever")
    prepaid_points: int | None = Field(description="Prepaid terms: purchased points not yet issued")
    credit_limit_minor: int | None
    credit_used_minor: int = Field(description="Cash due for issued points on no statement yet")
    open_periods: list[StatementLine]


class Position(BaseModel):
    partner: str
    status: Status
    programs: list[ProgramPosition]


class ProgramStanding(BaseModel):
    """A partner at one program as its counters stand (no open periods computed): the list view."""

    program: str
    terms: TermsOut | None = Field(description="The version in force now; None before the first starts")
    funded_points: int
    issued_points: int
    prepaid_points: int | None
    credit_limit_minor: int | None
    credit_used_minor: int


class PartnerStanding(BaseModel):
    partner: PartnerOut
    programs: list[ProgramStanding]


class StandingList(BaseModel):
    data: list[PartnerStanding]
    next_cursor: str | None


CSV_COLUMNS = (
    "partner",
    "program",
    "period_start",
    "period_end",
    "points_issued",
    "points_issued_reversed",
    "points_accepted",
    "points_accepted_reversed",
    "cash_due_from_partner_minor",
    "cash_due_to_partner_minor",
    "net_minor",
    "currency",
)
