"""Settlement of 1,000,000 partner transactions: time and peak memory (issue 14).

Loads N transactions of one partner in one program (Asia/Shanghai, daily periods) over the past 60
days, set-based SQL consistent with the ledger's own postings: earns funded by the partner (its issued
account), burns accepted at it (its accepted account) and clawbacks of some earns, with two versions of
its prices. Then closes every ended period as `POST /v1/settlements` does (ledger_service.partners.service
.settle) and prints the time, the rate, the peak memory of this process and of the PostgreSQL backends,
and checks that the lines add up to the partner's accounts and that a second run closes nothing.

    .venv/bin/python bench/bench_settlement.py [--transactions 1000000] [--members 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from common import BackendMemory, load_sql, migrated_database, program_accounts_sql

from ledger_service.partners.service import settle

LOAD = (
    """
INSERT INTO ledger.programs (code, name, cash_points, cash_minor, currency, timezone)
VALUES ('SETB', 'Settlement bench', 500, 100, 'CNY', 'Asia/Shanghai');
"""
    + program_accounts_sql("SETB")
    + """
INSERT INTO ledger.partners (code, name, roles) VALUES ('BENCHP', 'Bench partner', '{issuer,acceptor}');
INSERT INTO ledger.partner_terms (partner_id, program_id, issue_points, issue_cash_minor, accept_points,
    accept_cash_minor, currency, period, funding, effective_from)
SELECT pa.id, p.id, x.ip, x.ic, x.ap, x.ac, 'CNY', 'daily', 'postpaid', x.since
FROM ledger.partners pa, ledger.programs p,
     (VALUES (500, 90, 500, 85, now() - interval '63 days'), (300, 57, 700, 111, now() - interval '30 days'))
         AS x(ip, ic, ap, ac, since)
WHERE pa.code = 'BENCHP' AND p.code = 'SETB';
SELECT ledger.partner_program(pa.id, p.id) FROM ledger.partners pa, ledger.programs p
WHERE pa.code = 'BENCHP' AND p.code = 'SETB';

INSERT INTO ledger.accounts (program_id, kind, member_ref, balance, lifetime_earned)
SELECT p.id, 'member', 'b' || g, 0, 0 FROM ledger.programs p, generate_series(1, {members}) g WHERE p.code = 'SETB';

-- 80% earns, 15% burns, 5% clawbacks (of earns), at times spread over 60 days up to two days ago.
CREATE TEMP TABLE bench_txn AS
SELECT gen_random_uuid() AS id, a.id AS account_id, a.member_ref, p.id AS program_id, pp.partner_id,
       pp.issued_account, pp.accepted_account,
       CASE WHEN g % 20 < 16 THEN 'earn' WHEN g % 20 < 19 THEN 'burn' ELSE 'reversal' END AS type,
       (g % 97 + 1)::bigint AS points,
       now() - interval '2 days' - (g % 86400) * interval '1 minute' AS occurred_at
FROM generate_series(1, {transactions}) g
JOIN ledger.programs p ON p.code = 'SETB'
JOIN ledger.partner_programs pp ON pp.program_id = p.id
JOIN ledger.accounts a ON a.program_id = p.id AND a.kind = 'member' AND a.member_ref = 'b' || (g % {members} + 1);

INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                 occurred_at, partner_id)
SELECT id, program_id, type, account_id, member_ref, points,
       CASE type WHEN 'earn' THEN 'purchase' WHEN 'reversal' THEN 'earn' END, 'bench', occurred_at, partner_id
FROM bench_txn;
-- The member side of each, and the partner side: earns take from issued, clawbacks give back to it,
-- burns go to accepted.
INSERT INTO ledger.postings (txn_id, account_id, amount)
SELECT id, account_id, CASE type WHEN 'earn' THEN points ELSE -points END FROM bench_txn
UNION ALL
SELECT id, CASE type WHEN 'burn' THEN accepted_account ELSE issued_account END,
       CASE type WHEN 'earn' THEN -points ELSE points END FROM bench_txn;
UPDATE ledger.accounts a SET balance = s.total
FROM (SELECT account_id, sum(CASE type WHEN 'earn' THEN points ELSE -points END) AS total
      FROM bench_txn GROUP BY account_id) s WHERE a.id = s.account_id;
DELETE FROM ledger.outbox;
ANALYZE;
"""
)

ACCOUNTS = """
SELECT -(SELECT coalesce(sum(amount), 0) FROM ledger.postings WHERE account_id = pp.issued_account) AS issued,
       (SELECT coalesce(sum(amount), 0) FROM ledger.postings WHERE account_id = pp.accepted_account) AS accepted
FROM ledger.partner_programs pp
"""


async def main(args: argparse.Namespace) -> None:
    async with migrated_database("jifen-bench-settlement-") as db:
        started = time.perf_counter()
        pid = await load_sql(db, LOAD, transactions=args.transactions, members=args.members)
        async with db.driver() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM ledger.transactions WHERE partner_id IS NOT NULL"
            )
            accounts = await conn.fetchrow(ACCOUNTS)
        assert accounts is not None
        print(
            f"loaded {count:,} partner transactions on {args.members:,} members in {time.perf_counter() - started:.1f} s"
        )
        memory = BackendMemory(pid)
        memory.start()
        began = time.perf_counter()
        first = await settle(db, datetime.now(UTC))
        seconds = time.perf_counter() - began
        memory.stop()
        again = await settle(db, datetime.now(UTC))
        await db.dispose()
        settled = sum(line.transactions for line in first.lines)
        issued = sum(line.points_issued - line.points_issued_reversed for line in first.lines)
        accepted = sum(line.points_accepted - line.points_accepted_reversed for line in first.lines)
        net = sum(line.net_minor for line in first.lines)
        print(
            f"settled {settled:,} transactions into {len(first.lines)} daily statement lines in {seconds:.1f} s:"
            f" {settled / seconds:,.0f} transactions/s; net {net:,} fen due from the partner"
        )
        memory.report("the run")
        print(
            f"check: issued {issued:,} = {accounts['issued']:,} and accepted {accepted:,} = {accounts['accepted']:,}"
            f" on the partner's accounts; a second run closed {len(again.lines)} lines"
        )
        assert settled == count and issued == accounts["issued"] and accepted == accounts["accepted"]
        assert again.lines == []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
