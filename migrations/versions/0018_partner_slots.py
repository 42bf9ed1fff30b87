"""ledger: partner counters spread over slots, so partner earns need not queue on one row

A postpaid partner without a credit limit needs no check when it funds an earn, only its counters
(issued points, open cash) raised. On one row (partner_programs) that is a lock every coalesced
batch with such an earn queued on until commit, which stopped group commit from grouping. Those
increments now go to one of several slot rows per partner and program (the connection's, by backend
pid), and readers add the slots to the partner_programs row (ledger.partner_totals, in
ledger_service/sql/partners.sql). Checked partners (prepaid, or a credit limit) get a room on each
slot, a share of what they may still issue: a coalesced batch takes from its slot's room under that
row's lock only, and falls back to the exact check (every slot and the partner_programs row locked)
when the room is short.

Revision ID: 0018_partner_slots
Revises: 0014_input_limits
"""

from migrations.script_sql import run_script

revision = "0018_partner_slots"
down_revision = "0014_input_limits"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE ledger.partner_slots (
    partner_id int NOT NULL,
    program_id int NOT NULL,
    slot smallint NOT NULL,
    issued_points bigint NOT NULL DEFAULT 0,   -- added to partner_programs.issued_points
    open_cash numeric NOT NULL DEFAULT 0,      -- added to partner_programs.open_cash
    -- A checked partner's share of what it may still issue, allotted to this slot under the terms in
    -- force from room_terms (prepaid points or credit cash; NULL: not that kind): a coalesced batch
    -- takes from its slot's room under the slot's row lock alone (ledger.take_partner_rooms).
    room_points bigint,
    room_cash numeric,
    room_terms timestamptz,
    PRIMARY KEY (partner_id, program_id, slot),
    FOREIGN KEY (partner_id, program_id) REFERENCES ledger.partner_programs (partner_id, program_id)
);
"""

DOWNGRADE = """
DROP VIEW IF EXISTS ledger.partner_totals;  -- defined by ledger_service/sql/partners.sql
UPDATE ledger.partner_programs pp SET issued_points = pp.issued_points + s.issued, open_cash = pp.open_cash + s.cash
FROM (SELECT partner_id, program_id, sum(issued_points) AS issued, sum(open_cash) AS cash
      FROM ledger.partner_slots GROUP BY 1, 2) s
WHERE pp.partner_id = s.partner_id AND pp.program_id = s.program_id;
DROP TABLE ledger.partner_slots;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
