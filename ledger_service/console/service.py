"""What each console page shows, assembled from the same service functions the API uses, and the
actions, which go through the API's own write path (so they are idempotent and land in the event
feed like any API call)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from markupsafe import Markup

from ledger_service.batches import repository as batches_repo
from ledger_service.batches.schemas import BatchOut
from ledger_service.batches.service import get_batch, list_batches
from ledger_service.console import charts
from ledger_service.events import repository as events_repo
from ledger_service.events.service import list_webhooks
from ledger_service.finance import service as finance
from ledger_service.finance.schemas import Aging, Cohorts, RollForward
from ledger_service.jobs.service import ExpiryRun, run_expiry
from ledger_service.members import repository as members_repo
from ledger_service.members import service as members
from ledger_service.partners import service as partners
from ledger_service.partners.schemas import (
    PartnerOut,
    Position,
    Settlement,
    SettlementList,
    StandingList,
    StatementList,
    TermsOut,
)
from ledger_service.postings import service as postings
from ledger_service.postings.engine import Outcome, PostingEngine
from ledger_service.postings.schemas import ReverseIn, VoidIn
from ledger_service.profiles import service as profiles
from ledger_service.profiles.schemas import Profile
from ledger_service.programs import service as programs
from ledger_service.programs.schemas import ProgramOut
from ledger_service.reports import service as reports
from ledger_service.rules.service import RuleBook, list_rule_sets
from ledger_service.segments import service as segments
from ledger_service.segments.schemas import SegmentMemberPage, SegmentOut, SegmentPage, SegmentRefresh
from services.auth import Principal
from services.db import Database

PROGRAMS_PER_PAGE = 100
BATCHES_PER_PAGE = 50
REJECTION_LINES = 100
PARTNERS_PER_PAGE = 50
STATEMENT_LINES = 50
SETTLEMENTS_PER_PAGE = 20
SEGMENTS_PER_PAGE = 100
SEGMENT_MEMBERS = 100


@dataclass
class ProgramCharts:
    roll: RollForward  # the last 30 days, per UTC day: GET /v1/programs/{code}/liability?period=day
    flows: Markup
    liability: Markup
    issued: int
    redeemed: int
    expired: int


async def program_charts(db: Database, code: str) -> ProgramCharts:
    roll = await finance.roll_forward(db, code, None, None, "day")
    return ProgramCharts(
        roll=roll,
        flows=charts.flows_chart(roll),
        liability=charts.liability_chart(roll),
        issued=sum(r.issued for r in roll.rows),
        redeemed=sum(r.redeemed for r in roll.rows),
        expired=sum(r.expired for r in roll.rows),
    )


@dataclass
class Overview:
    programs: list[ProgramOut]
    summaries: dict[str, reports.Summary]
    next_cursor: str | None
    selected: ProgramOut | None
    charts: ProgramCharts | None


async def _chosen(
    db: Database, principal: Principal, asked: str | None, listed: list[ProgramOut]
) -> ProgramOut | None:
    """The program a page shows: the one asked for (if the key may see it), else the first listed."""
    if asked is not None:
        principal.require_program(asked)
        return await programs.get_program(db, asked)
    return listed[0] if listed else None


async def overview(db: Database, principal: Principal, selected: str | None, cursor: str | None) -> Overview:
    page = await programs.list_programs(db, principal, limit=PROGRAMS_PER_PAGE, cursor=cursor)
    summaries = await reports.summaries(db, page.data)
    chosen = await _chosen(db, principal, selected, page.data)
    return Overview(
        programs=page.data,
        summaries=summaries,
        next_cursor=page.next_cursor,
        selected=chosen,
        charts=None if chosen is None else await program_charts(db, chosen.code),
    )


@dataclass
class ProgramPage:
    program: ProgramOut
    summary: reports.Summary
    report: reports.Report
    rules: list[Any]
    charts: ProgramCharts
    monthly: RollForward  # GET /v1/programs/{code}/liability?period=month, its default 12 months
    aging: Aging
    aging_chart: Markup
    cohorts: Cohorts
    cohort_chart: Markup


async def program_page(db: Database, book: RuleBook, principal: Principal, code: str) -> ProgramPage:
    principal.require_program(code)
    program = await programs.get_program(db, code)
    program_charts_ = await program_charts(db, code)
    roll = program_charts_.roll
    aging = await finance.aging(db, code, None)
    cohorts = await finance.cohorts(db, code, None, None)
    return ProgramPage(
        program=program,
        summary=(await reports.summaries(db, [program]))[code],
        report=await reports.report(
            db,
            code,
            finance.midnight(roll.period_from, program.timezone),
            finance.midnight(roll.period_to, program.timezone),
        ),
        rules=list(reversed((await list_rule_sets(book, code)).data)),
        charts=program_charts_,
        monthly=await finance.roll_forward(db, code, None, None, "month"),
        aging=aging,
        aging_chart=charts.aging_chart(aging),
        cohorts=cohorts,
        cohort_chart=charts.cohort_chart(cohorts),
    )


@dataclass
class MemberPage:
    program: ProgramOut
    member: Any
    lots: list[Any]
    holds: list[Any]
    statement: Any
    tiers: Any
    profile: Profile


async def member_page(db: Database, principal: Principal, code: str, member_ref: str) -> MemberPage:
    principal.require_program(code)
    program = await programs.get_program(db, code)
    view = await members.member_view(db, code, member_ref)
    async with db.driver() as conn:
        program_id = await members_repo.program_id(conn, code)
        assert program_id is not None
        lots = await members_repo.open_lots(conn, program_id, member_ref, 100)
        holds = await members_repo.active_holds(conn, program_id, member_ref, 50)
    return MemberPage(
        program=program,
        member=view,
        lots=lots,
        holds=holds,
        statement=await members.statement(db, code, member_ref, limit=50, cursor=None),
        tiers=await members.tier_history(db, code, member_ref, limit=20, cursor=None),
        profile=await profiles.profile(db, code, member_ref),  # GET .../profile: recomputed on read
    )


@dataclass
class BatchList:
    batches: list[BatchOut]
    next_before: str | None


async def batch_list(db: Database, principal: Principal, status: str | None, before: str | None) -> BatchList:
    """The API's list (GET /v1/batches): the same visibility, order and cursor."""
    page = await list_batches(db, principal, status=status, limit=BATCHES_PER_PAGE, cursor=before)
    return BatchList(batches=page.data, next_before=page.next_cursor)


@dataclass
class BatchPage:
    batch: BatchOut
    reasons: list[Any]
    reason: str | None
    lines: list[Any]


async def batch_page(db: Database, principal: Principal, batch_id: UUID, reason: str | None) -> BatchPage:
    batch = await get_batch(db, principal, batch_id)  # the API's visibility check
    async with db.driver() as conn:
        counts = (await batches_repo.rejected_by_reason(conn, [batch_id])).get(batch_id, {})
        reasons = [{"reason": r, "n": n} for r, n in counts.items()]
        if reason is None and reasons:
            reason = str(reasons[0]["reason"])
        lines = (
            []
            if reason is None
            else await batches_repo.rejections(conn, batch_id, 0, REJECTION_LINES, reason)
        )
    return BatchPage(batch=batch, reasons=reasons, reason=reason, lines=lines)


@dataclass
class WebhookPage:
    hooks: list[Any]
    last_seq: int


async def webhook_page(db: Database, principal: Principal) -> WebhookPage:
    hooks = (await list_webhooks(db, principal)).data
    async with db.driver() as conn:
        last = await events_repo.last_seq(conn)
    return WebhookPage(hooks=hooks, last_seq=last)


@dataclass
class PartnerList:
    programs: list[ProgramOut]
    program: str | None
    standings: StandingList


async def partner_list(
    db: Database, principal: Principal, program: str | None, cursor: str | None
) -> PartnerList:
    """Partners (at one program, or all), with the programs the key sees to choose from."""
    return PartnerList(
        programs=(await programs.list_programs(db, principal, limit=PROGRAMS_PER_PAGE, cursor=None)).data,
        program=program,
        standings=await partners.standings(
            db, principal, program=program, limit=PARTNERS_PER_PAGE, cursor=cursor
        ),
    )


@dataclass
class PartnerPage:
    partner: PartnerOut
    terms: list[TermsOut]
    position: Position
    statements: StatementList
    cursor: str | None


async def partner_page(db: Database, principal: Principal, code: str, cursor: str | None) -> PartnerPage:
    """GET /v1/partners/{code}, its terms, position and statements, each with the API's visibility."""
    return PartnerPage(
        partner=await partners.get_partner(db, principal, code),
        terms=(await partners.list_terms(db, principal, code)).data,
        position=await partners.position(db, principal, code),
        statements=await partners.statements(db, principal, code, limit=STATEMENT_LINES, cursor=cursor),
        cursor=cursor,
    )


async def statements_csv(db: Database, principal: Principal, code: str, cursor: str | None) -> str:
    """The lines of one page of the partner page's statements, as the API's `Accept: text/csv`."""
    page = await partners.statements(db, principal, code, limit=STATEMENT_LINES, cursor=cursor)
    return partners.lines_csv(page.data)


async def settlement_list(db: Database, principal: Principal, cursor: str | None) -> SettlementList:
    return await partners.list_settlements(db, principal, limit=SETTLEMENTS_PER_PAGE, cursor=cursor)


async def settlement(db: Database, principal: Principal, settlement_id: UUID) -> Settlement:
    return await partners.get_settlement(db, principal, settlement_id)


async def settlement_csv(db: Database, principal: Principal, settlement_id: UUID) -> str:
    """GET /v1/settlements/{id} with `Accept: text/csv`: the run's lines the key may see."""
    return partners.lines_csv((await partners.get_settlement(db, principal, settlement_id)).lines)


@dataclass
class SegmentList:
    programs: list[ProgramOut]
    selected: ProgramOut | None
    segments: SegmentPage | None


async def segment_list(
    db: Database, principal: Principal, program: str | None, cursor: str | None
) -> SegmentList:
    """One program's segments with their sizes (the programs the key sees to choose from)."""
    page = await programs.list_programs(db, principal, limit=PROGRAMS_PER_PAGE, cursor=None)
    chosen = await _chosen(db, principal, program, page.data)
    return SegmentList(
        programs=page.data,
        selected=chosen,
        segments=None
        if chosen is None
        else await segments.list_segments(db, chosen.code, SEGMENTS_PER_PAGE, cursor),
    )


@dataclass
class SegmentView:
    program: ProgramOut
    segment: SegmentOut
    members: SegmentMemberPage | None  # only for a key that may list members (ledger:admin, as the API)


async def segment_page(
    db: Database, principal: Principal, code: str, segment: str, cursor: str | None, with_members: bool
) -> SegmentView:
    principal.require_program(code)
    return SegmentView(
        program=await programs.get_program(db, code),
        segment=await segments.get(db, code, segment),
        members=await segments.members(db, code, segment, SEGMENT_MEMBERS, cursor) if with_members else None,
    )


async def segment_export(db: Database, principal: Principal, code: str, segment: str) -> AsyncIterator[bytes]:
    principal.require_program(code)
    return await segments.members_csv(db, code, segment)


# Actions: the API's own service functions, under the operator's key and an idempotency key the
# form carried, so a double submit or a browser retry applies nothing twice.


async def void_hold(engine: PostingEngine, principal: Principal, hold_id: UUID, key: str) -> Outcome:
    return await postings.void(engine, hold_id, VoidIn(reason="voided in the ops console"), principal, key)


async def reverse(
    engine: PostingEngine, principal: Principal, txn_id: UUID, points: int | None, reason: str, key: str
) -> Outcome:
    return await postings.reverse(engine, txn_id, ReverseIn(points=points, reason=reason), principal, key)


async def expire_now(db: Database) -> ExpiryRun:
    return await run_expiry(db)


async def refresh_segment(db: Database, principal: Principal, code: str, segment: str) -> SegmentRefresh:
    """POST .../segments/{segment}/refresh: the members who enter or leave reach the event feed."""
    principal.require_program(code)
    return await segments.refresh(db, code, segment)
