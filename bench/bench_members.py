"""Member profiles and segments at scale, and the cost of a segment-matching earning rule (issue 15).

Loads N members and P postings (P / 2 transactions: earns with a merchant category and a channel,
burns, over the last 400 days) into one program, set-based in SQL, with a lot per member holding
its balance. Creates three segments, then refreshes every profile and the three segments as the
scheduled job does (ledger_service.profiles.service.run_profiles: bounded transactions of --chunk
members) and prints the time, the peak memory of this process and of the PostgreSQL backends, and
the segment sizes.

Then earn throughput, in this process through the posting engine (pricing, group commit, the one
set-based earn), with no HTTP in between: purchases priced by a plain rule set, and by one whose rule
matches a segment (priced for members in and out of it, the ledger picking the member's in the
earn's own statement), in alternating rounds of the same length on the same members of the loaded
program (the plain rules are its version in force an hour ago, which earns back-dated two hours take),
so both sides post into the same data and load on the machine falls on both alike.

    .venv/bin/python bench/bench_members.py [--members 1000000] [--postings 10000000] [--chunk 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from common import BackendMemory, load_sql, migrated_database

from ledger_service.postings.engine import PostingEngine
from ledger_service.postings.schemas import EarnIn
from ledger_service.postings.service import earn
from ledger_service.profiles import service as profiles
from ledger_service.programs.schemas import ProgramIn
from ledger_service.programs.service import create_program
from ledger_service.rules.schemas import RuleSetIn
from ledger_service.rules.service import RuleBook, create_rule_set
from ledger_service.segments import service as segments
from ledger_service.segments.schemas import SegmentIn
from services.auth import Principal, create_api_key

PROGRAM = "MEMB"

# Members m1..mN, then P/2 transactions (6 in 7 earns), 2 postings each, spread over 400 days; no
# outbox rows (triggers off while loading) and one lot per member with a positive balance.
LOAD = """
SET session_replication_role = replica;
INSERT INTO ledger.accounts (program_id, kind, member_ref)
SELECT p.id, 'member', 'm' || g FROM ledger.programs p, generate_series(1, {members}) g WHERE p.code = 'MEMB';
CREATE TEMP TABLE bench_acc AS
SELECT a.id, substr(a.member_ref, 2)::int AS n FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
WHERE p.code = 'MEMB' AND a.kind = 'member';
CREATE UNIQUE INDEX ON bench_acc (n);
INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference, mcc,
                                 channel, occurred_at, created_at)
SELECT md5('t' || g)::uuid, p.id, CASE WHEN g % 7 = 0 THEN 'burn' ELSE 'earn' END, b.id, 'm' || b.n,
       CASE WHEN g % 7 = 0 THEN g % 50 + 1 ELSE g % 400 + 1 END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'purchase' END, 'bench',
       CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['5411', '5812', '5814', '4511', '5311', '5541', '5912', '7011'])[g % 8 + 1] END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['pos', 'app', 'online'])[g % 3 + 1] END,
       -- every tenth member has done nothing for 200 days or more (dormant)
       now() - ((g * 37) % (400 * 1440)) * interval '1 minute'
             - CASE WHEN b.n % 10 = 0 THEN interval '200 days' ELSE interval '0' END, now()
FROM generate_series(1::bigint, {transactions}) g
JOIN ledger.programs p ON p.code = 'MEMB'
JOIN bench_acc b ON b.n = (g * 7919) % {members} + 1;
INSERT INTO ledger.postings (txn_id, account_id, amount)
SELECT t.id, x.account_id, x.amount
FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id,
     LATERAL (VALUES (t.account_id, CASE t.type WHEN 'earn' THEN t.points ELSE -t.points END),
                     (CASE t.type WHEN 'earn' THEN p.issuance_account ELSE p.redemption_account END,
                      CASE t.type WHEN 'earn' THEN -t.points ELSE t.points END)) x(account_id, amount)
WHERE p.code = 'MEMB';
UPDATE ledger.accounts a SET balance = s.total, lifetime_earned = s.earned
FROM (SELECT account_id, sum(CASE type WHEN 'earn' THEN points ELSE -points END) AS total,
             sum(points) FILTER (WHERE type = 'earn') AS earned
      FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id WHERE p.code = 'MEMB'
      GROUP BY account_id) s
WHERE a.id = s.account_id;
INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
SELECT a.id, a.program_id, NULL, a.balance, a.balance, now() + (a.id % 120) * interval '1 day'
FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
WHERE p.code = 'MEMB' AND a.kind = 'member' AND a.balance > 0;
SET session_replication_role = DEFAULT;
ANALYZE;
"""

SEGMENTS = [
    {
        "code": "dormant-high-value",
        "name": "Dormant members who earned a lot",
        "criteria": {"all": [{"field": "tag", "op": "eq", "value": "dormant"},
                             {"field": "lifetime_earned", "op": "gte", "value": 500}]},
    },
    {
        "code": "app-recent",
        "name": "Earned in the app, last earn within 60 days",
        "criteria": {"all": [{"field": "channel", "op": "eq", "value": "app"},
                             {"field": "days_since_last_earn", "op": "lte", "value": 60}]},
    },
    {
        "code": "travel-or-expiring",
        "name": "Travellers with 90-day earns, or points expiring soon",
        "criteria": {"any": [{"field": "tag", "op": "eq", "value": "expiring_soon"},
                             {"all": [{"field": "mcc", "op": "in", "value": ["4511", "7011"]},
                                      {"field": "earned_points_90d", "op": "between", "value": [100, 100000]}]}]},
    },
]  # fmt: skip

BASE = {"points": 1, "per_amount_minor": 100}


def _rules(segment: str | None, effective_from: datetime) -> RuleSetIn:
    rules = []
    if segment is not None:
        rules = [{"name": "campaign", "match": {"segment": segment}, "multiplier": Decimal(2)}]
    return RuleSetIn.model_validate({"effective_from": effective_from, "base": BASE, "rules": rules})


def _program(code: str) -> ProgramIn:
    return ProgramIn.model_validate(
        {"code": code, "name": code, "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"}}
    )


async def _earn_round(
    engine: PostingEngine, book: RuleBook, principal: Principal, members: list[str], at: str | None,
    clients: int, seconds: float,
) -> int:  # fmt: skip
    """Earns of 123.45 CNY by `clients` concurrent callers for `seconds`, occurred `at` (None: now, under
    the segment rule; else under the plain version in force then); returns how many posted."""
    deadline = time.perf_counter() + seconds
    refs = itertools.cycle(members)
    done = 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            body = EarnIn.model_validate(
                {"program": PROGRAM, "member_ref": next(refs), "reference": "bench", "occurred_at": at,
                 "purchase": {"amount_minor": 12345, "currency": "CNY", "channel": "app"}}
            )  # fmt: skip
            outcome = await earn(engine, book, body, principal, secrets.token_hex(12))
            assert outcome.status == 201, outcome
            done += 1

    await asyncio.gather(*(caller() for _ in range(clients)))
    return done


async def main(args: argparse.Namespace) -> None:
    async with migrated_database("jifen-bench-members-", pool_size=args.pool) as db:
        key_id, _ = await create_api_key(db, name="bench", scopes=["ledger:admin"])
        principal = Principal(key_id=key_id, name="bench", scopes=frozenset({"ledger:admin"}), programs=None)
        book = RuleBook(db)
        await create_program(db, _program(PROGRAM))
        for body in SEGMENTS:
            await segments.create(db, PROGRAM, SegmentIn.model_validate(body))
        started = time.perf_counter()
        pid = await load_sql(db, LOAD, members=args.members, transactions=args.postings // 2)
        async with db.driver() as conn:
            postings = await conn.fetchval(
                "SELECT count(*) FROM ledger.postings po JOIN ledger.accounts a ON a.id = po.account_id"
                " JOIN ledger.programs p ON p.id = a.program_id WHERE p.code = $1",
                PROGRAM,
            )
        print(
            f"loaded {args.members:,} members and {postings:,} postings ({postings // 2:,} transactions)"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        memory = BackendMemory(pid)
        memory.start()
        began = time.perf_counter()
        # What the scheduled job (profiles.run_profiles) does, with the chunk size given.
        async with db.driver() as conn:
            program_id = await conn.fetchval("SELECT id FROM ledger.programs WHERE code = $1", PROGRAM)
        now = datetime.now(UTC)
        refreshed = await profiles.refresh_program(db, program_id, now, chunk=args.chunk)
        evaluated = await segments.evaluate_program(db, program_id, now)
        seconds = time.perf_counter() - began
        memory.stop()
        async with db.driver() as conn:
            sizes = await conn.fetch(
                "SELECT s.code, s.member_count FROM ledger.segments s JOIN ledger.programs p ON p.id = s.program_id"
                " WHERE p.code = $1 ORDER BY s.code",
                PROGRAM,
            )
        print(
            f"refreshed {refreshed:,} profiles and {len(evaluated)} segments in {seconds:.1f} s"
            f" ({refreshed / seconds:,.0f} members/s; {args.chunk:,} members per transaction);"
            f" {sum(e.entered for e in evaluated):,} segment entries"
        )
        print("segments: " + ", ".join(f"{r['code']} {r['member_count']:,}" for r in sizes))
        memory.report("the refresh")

        # Earn throughput: members of the campaign's segment, in this program, so that both sides post
        # into the same data. The plain rules are the version in force an hour ago (the earns of those
        # rounds carry an occurred_at then), the segment rule the version in force now.
        async with db.driver() as conn:
            members = [
                r["member_ref"]
                for r in await conn.fetch(
                    "SELECT sm.member_ref FROM ledger.segment_members sm JOIN ledger.segments s ON s.id = sm.segment_id"
                    " WHERE s.code = 'app-recent' ORDER BY sm.member_ref LIMIT $1",
                    args.earn_members,
                )
            ]
        now = datetime.now(UTC)
        await create_rule_set(db, book, PROGRAM, _rules(None, datetime(2020, 1, 1, tzinfo=UTC)), key_id)
        await create_rule_set(db, book, PROGRAM, _rules("app-recent", now - timedelta(hours=1)), key_id)
        plain_at, seg_at = (now - timedelta(hours=2)).isoformat(), None
        engine = PostingEngine(db)
        for at in (plain_at, seg_at):  # warm up: statements prepared, rules cached
            await _earn_round(engine, book, principal, members, at, args.clients, 2.0)
        totals = {plain_at: 0, seg_at: 0}
        for i in range(args.rounds):
            for at in (plain_at, seg_at) if i % 2 == 0 else (seg_at, plain_at):
                totals[at] += await _earn_round(
                    engine, book, principal, members, at, args.clients, args.round_seconds
                )
        window = args.rounds * args.round_seconds
        plain, seg = totals[plain_at] / window, totals[seg_at] / window
        print(
            f"earn throughput, {args.rounds} alternating rounds of {args.round_seconds:.0f} s each,"
            f" {args.clients} concurrent callers, {len(members):,} members of one program: plain rules"
            f" {plain:,.0f} earns/s, segment-matching rule {seg:,.0f} earns/s ({seg / plain:.1%} of plain)"
        )
        async with db.driver() as conn:
            doubled = await conn.fetchval(
                "SELECT count(*) FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id"
                " WHERE p.code = $1 AND t.type = 'earn' AND t.rule_set_id IS NOT NULL AND t.points = 246",
                PROGRAM,
            )
        print(f"check: {doubled:,} segment-priced earns got the campaign's 2x (246 points)")
        assert doubled > 0
        await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--postings", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=profiles.CHUNK, help="members per refresh transaction")
    # Enough callers to keep the engine busy: throughput, not the latency of one extra read, is compared.
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--earn-members", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
