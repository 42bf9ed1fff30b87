"""DESIGN §7 invariants for the catalog, checked with SQL over catalog.* and ledger.* after a scenario.

Call it when the scenario is quiet: every saga is expected to have finished.
"""

from __future__ import annotations

from typing import Any

from tests.ledger.invariants import check_ledger_invariants

HELD = "('debiting', 'fulfilled', 'cancelling')"


async def check_catalog_invariants(db: Any, programs: list[str]) -> None:
    async with db.driver() as conn:
        unfinished = await conn.fetch(
            "SELECT id, status FROM catalog.redemptions"
            " WHERE program = ANY ($1) AND status IN ('debiting', 'refunding', 'cancelling')",
            programs,
        )
        assert not unfinished, f"unfinished sagas: {unfinished}"

        # Stock never negative (a CHECK), and stock + units held by live redemptions = stock provided.
        # With every saga finished, the held units are the fulfilled ones: stock + fulfilled = initial.
        bad_stock = await conn.fetch(
            f"""SELECT r.sku, r.stock, r.stock_total, coalesce(h.held, 0) AS held,
                       coalesce(f.q, 0) AS fulfilled
                FROM catalog.rewards r
                LEFT JOIN (SELECT reward_id, sum(stock_taken) AS held FROM catalog.redemptions
                           WHERE status IN {HELD} GROUP BY reward_id) h ON h.reward_id = r.id
                LEFT JOIN (SELECT reward_id, sum(stock_taken) AS q FROM catalog.redemptions
                           WHERE status = 'fulfilled' GROUP BY reward_id) f ON f.reward_id = r.id
                WHERE r.program = ANY ($1) AND r.stock IS NOT NULL
                  AND (r.stock < 0 OR r.stock + coalesce(h.held, 0) <> r.stock_total
                       OR r.stock + coalesce(f.q, 0) <> r.stock_total)""",
            programs,
        )
        assert not bad_stock, f"stock + fulfilled != stock provided: {bad_stock}"

        # Per-member allowance in use = the units of that member's live redemptions.
        bad_usage = await conn.fetch(
            f"""SELECT coalesce(u.reward_id, h.reward_id) AS reward_id,
                       coalesce(u.member_ref, h.member_ref) AS m,
                       u.used, h.q
                FROM (SELECT u.* FROM catalog.member_usage u JOIN catalog.rewards r ON r.id = u.reward_id
                      WHERE r.program = ANY ($1)) u
                FULL JOIN (SELECT reward_id, member_ref, sum(quantity) AS q FROM catalog.redemptions
                           WHERE program = ANY ($1) AND status IN {HELD} GROUP BY reward_id, member_ref) h
                    ON h.reward_id = u.reward_id AND h.member_ref = u.member_ref
                WHERE coalesce(u.used, 0) <> coalesce(h.q, 0)""",
            programs,
        )
        assert not bad_usage, f"allowance in use differs from live redemptions: {bad_usage}"

        # Codes: a fulfilled voucher redemption holds exactly `quantity` issued codes; a cancelled one its
        # voided codes; nothing else holds a code; a code row is one code, so none is given twice.
        bad_codes = await conn.fetch(
            """SELECT r.id, r.status, r.quantity, count(c.id) AS codes,
                      count(c.id) FILTER (WHERE c.status = 'issued') AS issued,
                      count(c.id) FILTER (WHERE c.status = 'void') AS voided
               FROM catalog.redemptions r LEFT JOIN catalog.voucher_codes c ON c.redemption_id = r.id
               WHERE r.program = ANY ($1)
               GROUP BY r.id
               HAVING NOT CASE
                   WHEN r.reward_type <> 'voucher' OR r.status = 'failed' THEN count(c.id) = 0
                   WHEN r.status = 'fulfilled'
                        THEN count(c.id) FILTER (WHERE c.status = 'issued') = r.quantity
                        AND count(c.id) = r.quantity
                   WHEN r.status = 'cancelled'
                        THEN count(c.id) FILTER (WHERE c.status = 'void') = r.quantity
                        AND count(c.id) = r.quantity
                   ELSE false END""",
            programs,
        )
        assert not bad_codes, f"voucher codes out of place: {bad_codes}"
        orphan_codes = await conn.fetch(
            """SELECT c.id, c.status FROM catalog.voucher_codes c JOIN catalog.rewards w ON w.id = c.reward_id
               LEFT JOIN catalog.redemptions r ON r.id = c.redemption_id
               WHERE w.program = ANY ($1) AND c.status <> 'available'
                 AND (r.id IS NULL OR r.reward_id <> c.reward_id)""",
            programs,
        )
        assert not orphan_codes, f"codes held by no redemption of their reward: {orphan_codes}"

        # §7.5, both legs or neither: each redemption's points moved through the ledger exactly as its
        # final state says; a debit is refunded at most once and only in full.
        rows = await conn.fetch(
            """WITH red AS (SELECT * FROM catalog.redemptions WHERE program = ANY ($1)),
               lt AS (SELECT t.reference, t.type, count(*) AS n, sum(t.points) AS pts,
                             min(t.id::text) AS any_id
                      FROM ledger.transactions t
                      WHERE t.type IN ('burn', 'reversal') AND t.reference IN (SELECT id::text FROM red)
                      GROUP BY t.reference, t.type)
               SELECT red.id, red.status, red.points, red.member_ref, red.burn_txn_id, red.refund_txn_id,
                      coalesce(b.n, 0) AS burns, coalesce(b.pts, 0) AS burned,
                      coalesce(v.n, 0) AS reversals, coalesce(v.pts, 0) AS refunded,
                      bt.points AS burn_points, bt.reversed_points, bt.member_ref AS burn_member,
                      bt.type AS burn_type,
                      rt.original_id AS refund_of
               FROM red
               LEFT JOIN lt b ON b.reference = red.id::text AND b.type = 'burn'
               LEFT JOIN lt v ON v.reference = red.id::text AND v.type = 'reversal'
               LEFT JOIN ledger.transactions bt ON bt.id = red.burn_txn_id
               LEFT JOIN ledger.transactions rt ON rt.id = red.refund_txn_id""",
            programs,
        )
        problems: list[Any] = []
        for r in rows:
            one_burn = r["burns"] == 1 and r["burned"] == r["points"]
            linked = (
                r["burn_txn_id"] is not None
                and r["burn_type"] == "burn"
                and r["burn_points"] == r["points"]
                and r["burn_member"] == r["member_ref"]
            )
            refunded_once = (
                r["reversals"] == 1
                and r["refunded"] == r["points"]
                and r["reversed_points"] == r["points"]
                and r["refund_of"] == r["burn_txn_id"]
            )
            if r["status"] == "fulfilled":
                ok = one_burn and linked and r["reversals"] == 0 and r["reversed_points"] == 0
            elif r["status"] == "cancelled":
                ok = one_burn and linked and refunded_once
            else:  # failed: neither leg, or a debit refunded once in full
                ok = (r["burns"] == 0 and r["reversals"] == 0 and r["refund_txn_id"] is None) or (
                    one_burn and linked and refunded_once
                )
            if not ok:
                problems.append(dict(r))
        assert not problems, f"redemptions whose ledger legs do not match their state: {problems[:5]}"

        # §7.4 for these programs (earns, burns and their reversals only): earned - clawed back - spent
        # + refunded = outstanding (the sum of member balances).
        books = await conn.fetch(
            """SELECT p.code,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'earn'), 0) AS earned,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'burn'), 0) AS spent,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'reversal' AND t.kind = 'burn'), 0)
                          AS refunded,
                      coalesce(sum(t.points) FILTER (WHERE t.type = 'reversal' AND t.kind = 'earn'), 0)
                          AS clawed,
                      (SELECT coalesce(sum(a.balance), 0) FROM ledger.accounts a
                       WHERE a.program_id = p.id AND a.kind = 'member') AS outstanding
               FROM ledger.programs p LEFT JOIN ledger.transactions t ON t.program_id = p.id
               WHERE p.code = ANY ($1) GROUP BY p.id, p.code""",
            programs,
        )
        for b in books:
            assert b["earned"] - b["clawed"] - b["spent"] + b["refunded"] == b["outstanding"], dict(b)

        # §7.3: one redemption per (API key, Idempotency-Key) — a unique constraint; checked anyway.
        dup = await conn.fetch(
            "SELECT api_key_id, idempotency_key, count(*) FROM catalog.redemptions"
            " GROUP BY 1, 2 HAVING count(*) > 1"
        )
        assert not dup, dup
    for program in programs:
        await check_ledger_invariants(db, program)  # §7.1, §7.2
