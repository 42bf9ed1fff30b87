"""DESIGN §7 invariant 5 for conversions, checked with SQL over conversion.* and ledger.* together:
a finished saga leaves either both legs applied or neither, and the points the ledgers moved for
conversions are exactly the amounts the conversions recorded."""

from __future__ import annotations

from typing import Any

# Per finished conversion: its legs in the two programs' ledgers, found by the conversion id the saga
# sends as the reference (so a leg applied without being recorded would be found too).
_LEGS = """
WITH legs AS (
    SELECT c.id, c.status, c.member_ref, c.from_points, c.to_points, c.debit_txn_id, c.credit_txn_id,
        c.compensation_txn_id, debit.burns, debit.burned, credit.earns, credit.earned,
        (SELECT coalesce(sum(r.points), 0) FROM ledger.transactions r
         WHERE r.type = 'reversal' AND r.original_id = c.debit_txn_id) AS refunded,
        (SELECT count(*) FROM ledger.transactions t WHERE t.id = c.debit_txn_id) AS debit_found,
        (SELECT count(*) FROM ledger.transactions t WHERE t.id = c.credit_txn_id) AS credit_found
    FROM conversion.conversions c
    -- each leg: the member's transactions (there must be one), and the points of all of them
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.member_ref = c.member_ref) AS burns,
            coalesce(sum(t.points), 0) AS burned
        FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id
        WHERE t.type = 'burn' AND t.reference = c.id::text AND p.code = c.from_program) debit
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.member_ref = c.member_ref) AS earns,
            coalesce(sum(t.points), 0) AS earned
        FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id
        WHERE t.type = 'earn' AND t.reference = c.id::text AND p.code = c.to_program) credit
    WHERE c.status IN ('completed', 'rejected', 'compensated', 'failed')
)
SELECT * FROM legs WHERE NOT CASE status
    WHEN 'completed' THEN burns = 1 AND burned = from_points AND refunded = 0 AND debit_found = 1
                          AND earns = 1 AND earned = to_points AND credit_found = 1
    WHEN 'compensated' THEN burns = 1 AND burned = from_points AND refunded = from_points AND earns = 0
    WHEN 'rejected' THEN burns = 0 AND earns = 0 AND debit_txn_id IS NULL
    ELSE false
END
"""

# Per program: what its conversion clearing account holds equals what the finished conversions say
# it should (source points in from completed conversions, target points out to them).
_CLEARING = """
WITH programs AS (
    SELECT DISTINCT code FROM (
        SELECT from_program AS code FROM conversion.conversions
        UNION SELECT to_program FROM conversion.conversions) x
), expected AS (
    SELECT p.code,
        coalesce((SELECT sum(from_points) FROM conversion.conversions
                  WHERE from_program = p.code AND status = 'completed'), 0)
      - coalesce((SELECT sum(to_points) FROM conversion.conversions
                  WHERE to_program = p.code AND status = 'completed'), 0) AS expected
    FROM programs p
), actual AS (
    SELECT lp.code, coalesce(sum(po.amount), 0) AS actual
    FROM ledger.programs lp LEFT JOIN ledger.postings po ON po.account_id = lp.conversion_account
    GROUP BY lp.code
)
SELECT e.code, e.expected, a.actual FROM expected e JOIN actual a ON a.code = e.code
WHERE e.expected <> a.actual
"""


async def check_conversion_invariants(db: Any) -> int:
    """Asserts invariant 5 over every finished conversion; returns how many were checked."""
    async with db.driver() as conn:
        bad = await conn.fetch(_LEGS)
        assert not bad, (
            f"conversions whose ledger legs do not match their status: {[dict(r) for r in bad[:5]]}"
        )
        clearing = await conn.fetch(_CLEARING)
        assert not clearing, (
            f"conversion clearing accounts off their conversions: {[dict(r) for r in clearing]}"
        )
        unsettled = await conn.fetch("SELECT id FROM conversion.conversions WHERE status = 'failed'")
        assert not unsettled, f"conversions that need an operator: {unsettled}"
        n: int = await conn.fetchval(
            "SELECT count(*) FROM conversion.conversions"
            " WHERE status IN ('completed', 'rejected', 'compensated', 'failed')"
        )
    return n
