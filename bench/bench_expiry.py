"""Expiry of 1,000,000 lots: time and peak memory (issue 3).

Loads N lots due in the past onto M members of one program (set-based SQL: earns, postings, lots
and balances consistent with each other), then runs the ledger's expiry job as the service does,
batch after batch, and prints the time, the rate and the peak memory of this process and of the
PostgreSQL backends. Memory must not grow with N: the work is set-based in the database and each
batch is one transaction.

    .venv/bin/python bench/bench_expiry.py [--lots 1000000] [--members 100000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import BackendMemory, load_sql, migrated_database, program_accounts_sql

from ledger_service.jobs.service import run_expiry

LOAD = (
    """
INSERT INTO ledger.programs (code, name, cash_points, cash_minor, currency, expiry)
VALUES ('EXPB', 'Expiry bench', 100, 100, 'CNY', '{"policy": "rolling", "months": 1}');
"""
    + program_accounts_sql("EXPB")
    + """
INSERT INTO ledger.accounts (program_id, kind, member_ref, balance, lifetime_earned)
SELECT p.id, 'member', 'b' || g, 0, 0 FROM ledger.programs p, generate_series(1, {members}) g WHERE p.code = 'EXPB';

CREATE TEMP TABLE bench_earn AS
SELECT gen_random_uuid() AS id, a.id AS account_id, a.member_ref, p.id AS program_id, p.issuance_account,
       (g % 97 + 1)::bigint AS points,
       now() - interval '60 days' - (g % 1000) * interval '1 minute' AS occurred_at
FROM generate_series(1, {lots}) g
JOIN ledger.programs p ON p.code = 'EXPB'
JOIN ledger.accounts a ON a.program_id = p.id AND a.kind = 'member' AND a.member_ref = 'b' || (g % {members} + 1);

INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference, occurred_at)
SELECT id, program_id, 'earn', account_id, member_ref, points, 'purchase', 'bench', occurred_at FROM bench_earn;
INSERT INTO ledger.postings (txn_id, account_id, amount)
SELECT id, account_id, points FROM bench_earn UNION ALL SELECT id, issuance_account, -points FROM bench_earn;
INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
SELECT account_id, program_id, id, points, points, occurred_at + interval '1 month' FROM bench_earn;
UPDATE ledger.accounts a SET balance = s.total, lifetime_earned = s.total
FROM (SELECT account_id, sum(points) AS total FROM bench_earn GROUP BY account_id) s WHERE a.id = s.account_id;
DELETE FROM ledger.outbox;
ANALYZE;
"""
)


async def main(args: argparse.Namespace) -> None:
    async with migrated_database("jifen-bench-expiry-") as db:
        started = time.perf_counter()
        pid = await load_sql(db, LOAD, lots=args.lots, members=args.members)
        async with db.driver() as conn:
            lots = await conn.fetchval("SELECT count(*) FROM ledger.lots")
            outstanding = await conn.fetchval(
                "SELECT sum(balance) FROM ledger.accounts WHERE kind = 'member'"
            )
        print(f"loaded {lots:,} lots on {args.members:,} members in {time.perf_counter() - started:.1f} s")
        memory = BackendMemory(pid)
        memory.start()
        run = await run_expiry(db, batch=args.batch)
        memory.stop()
        async with db.driver() as conn:
            left = await conn.fetchval(
                "SELECT coalesce(sum(balance), 0) FROM ledger.accounts WHERE kind = 'member'"
            )
            open_lots = await conn.fetchval("SELECT count(*) FROM ledger.lots WHERE remaining > 0")
        await db.dispose()
        seconds = run.duration_ms / 1000
        print(
            f"expired {run.lots:,} lots ({run.expired_points:,} points, {run.transactions:,} expiry transactions)"
            f" in {run.batches} batches of {args.batch:,}: {seconds:.1f} s, {run.lots / seconds:,.0f} lots/s"
        )
        memory.report("the run")
        print(f"check: outstanding {outstanding:,} -> {left:,}, open lots left {open_lots}")
        assert left == 0 and open_lots == 0 and run.expired_points == outstanding


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
