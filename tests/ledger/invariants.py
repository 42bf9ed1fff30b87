"""DESIGN §7 invariants, checked with SQL against the real database."""

from __future__ import annotations

from typing import Any


async def check_ledger_invariants(db: Any, program: str | None = None) -> None:
    """1: postings sum to zero per transaction and per program; 2: balances = postings and
    available >= 0 unless allowed; holds: `held` equals the sum of active holds; pending: `pending`
    equals the open points of lots not released yet, never more than the balance."""
    where = "" if program is None else "WHERE p.code = $1"
    args = () if program is None else (program,)
    async with db.driver() as conn:
        bad_txn = await conn.fetch(
            f"""SELECT t.id, sum(po.amount) FROM ledger.transactions t
                JOIN ledger.programs p ON p.id = t.program_id
                LEFT JOIN ledger.postings po ON po.txn_id = t.id {where}
                GROUP BY t.id, t.points
                HAVING coalesce(sum(po.amount), 0) <> 0 OR (count(po.id) = 0 AND t.points <> 0)""",
            *args,
        )
        assert not bad_txn, f"transactions whose postings do not sum to zero: {bad_txn[:5]}"
        bad_program = await conn.fetch(
            f"""SELECT p.code, sum(po.amount) FROM ledger.postings po
                JOIN ledger.accounts a ON a.id = po.account_id JOIN ledger.programs p ON p.id = a.program_id
                {where} GROUP BY p.code HAVING sum(po.amount) <> 0""",
            *args,
        )
        assert not bad_program, f"programs whose accounts do not sum to zero: {bad_program}"
        bad_balance = await conn.fetch(
            f"""SELECT a.member_ref, a.balance, coalesce(s.total, 0) AS postings
                FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
                LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger.postings GROUP BY account_id) s
                    ON s.account_id = a.id
                {where} {"AND" if where else "WHERE"} a.kind = 'member'
                AND a.balance <> coalesce(s.total, 0)""",
            *args,
        )
        assert not bad_balance, f"member balances that differ from their postings: {bad_balance[:5]}"
        # available = balance - held - pending; pending counts the lots not released yet, so this is
        # the strict form (lots already due count as pending until released).
        negative = await conn.fetch(
            f"""SELECT a.member_ref, a.balance, a.held, a.pending FROM ledger.accounts a
                JOIN ledger.programs p ON p.id = a.program_id
                {where} {"AND" if where else "WHERE"} a.kind = 'member' AND NOT p.allow_negative
                AND p.returns_policy <> 'allow_negative' AND a.balance - a.held - a.pending < 0""",
            *args,
        )
        assert not negative, f"members with negative available points: {negative[:5]}"
        bad_pending = await conn.fetch(
            f"""SELECT a.member_ref, a.pending, coalesce(l.total, 0) AS lots FROM ledger.accounts a
                JOIN ledger.programs p ON p.id = a.program_id
                LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM ledger.lots
                           WHERE pending_until IS NOT NULL GROUP BY account_id) l ON l.account_id = a.id
                {where} {"AND" if where else "WHERE"} a.kind = 'member'
                AND (a.pending <> coalesce(l.total, 0) OR a.pending > greatest(a.balance, 0))""",
            *args,
        )
        assert not bad_pending, f"pending points that differ from the pending lots: {bad_pending[:5]}"
        bad_held = await conn.fetch(
            f"""SELECT a.member_ref, a.held, coalesce(h.total, 0) FROM ledger.accounts a
                JOIN ledger.programs p ON p.id = a.program_id
                LEFT JOIN (SELECT account_id, sum(points) AS total FROM ledger.holds
                           WHERE status = 'held' GROUP BY account_id) h ON h.account_id = a.id
                {where} {"AND" if where else "WHERE"} a.kind = 'member' AND a.held <> coalesce(h.total, 0)""",
            *args,
        )
        assert not bad_held, f"held amounts that differ from active holds: {bad_held[:5]}"
        bad_lots = await conn.fetch(
            f"""SELECT a.member_ref, a.balance, coalesce(l.total, 0) AS lots FROM ledger.accounts a
                JOIN ledger.programs p ON p.id = a.program_id
                LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM ledger.lots GROUP BY account_id) l
                    ON l.account_id = a.id
                {where} {"AND" if where else "WHERE"} a.kind = 'member'
                AND greatest(a.balance, 0) <> coalesce(l.total, 0)""",
            *args,
        )
        assert not bad_lots, f"members whose open lots differ from their balance: {bad_lots[:5]}"
        missing_events = await conn.fetchval(
            f"""SELECT count(*) FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id
                LEFT JOIN ledger.outbox o ON o.txn_id = t.id
                {where} {"AND" if where else "WHERE"} o.id IS NULL""",
            *args,
        )
        assert missing_events == 0, f"{missing_events} transactions have no outbox event"
