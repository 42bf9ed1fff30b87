"""Where every table of the database goes on Citus (distributed PostgreSQL), declared once.

Issue 18's first part: the target placement and a ratchet on what still blocks it, not the
distribution itself. `tests/ledger/test_placement.py` checks against the migrated database that
`PLACEMENTS` names every table and no other, and that the Citus rules the distributed tables break
today are exactly `KNOWN_GAPS`; `jifen placement --citus` prints the calls that apply it
(`citus_commands`); docs/scale-out.md explains the choices and the plan.

The three kinds:
- reference: configuration, small and read by every write (a copy on every node, joins with anything);
- distributed: a member's own rows, hash-distributed by `member_key` and co-located with
  `ledger.accounts`, so that one member's earn, burn or hold touches one shard;
- coordinator-local: work queues, jobs' bookkeeping and the other services' low-volume sagas, whose
  runners scan across members (`FOR UPDATE SKIP LOCKED` over all rows: refused on distributed tables).

The distribution column, `member_key`, is `member_key(member_ref)`: a 32-bit hash of the member's
reference, the same in every program (a member's accounts in two programs share a shard, so a
conversion's debit and credit are single-shard each and their member view is one shard). It is a
placement key, not an identity: two members may share a key (they then share a shard), so uniqueness
stays on (program, kind, member_ref) with the key added. 32 bits so that a transaction's or a hold's
id (a UUIDv7, 74 free bits) can carry it and capture, void and reverse find their shard from the id.
A row's key is the key of the member whose request wrote it: a posting against a program's issuance
account or a partner's account carries the earning member's key, so every earn stays on the member's
shard; system accounts' own rows carry the key of their own reference (`''`, `partner:CODE:issued`),
never updated by an earn (their balances are sums of postings, multi-shard by nature).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

DISTRIBUTION_COLUMN = "member_key"
# Its type in every distributed table: co-located tables must agree, and 32 bits fit in an id.
DISTRIBUTION_TYPE = "integer"
COLOCATE_WITH = "ledger.accounts"
DEFAULT_SHARD_COUNT = 32

# The same value as `member_key()`, in SQL (`{ref}` is the member_ref expression): the first four
# bytes of the SHA-256 of its UTF-8 text, big-endian, signed.
MEMBER_KEY_SQL = "('x' || left(encode(sha256(convert_to({ref}, 'UTF8')), 'hex'), 8))::bit(32)::int"


def member_key(member_ref: str) -> int:
    """The distribution key of a member (or of a system account, by its own member_ref)."""
    return int.from_bytes(hashlib.sha256(member_ref.encode()).digest()[:4], "big", signed=True)


class Kind(StrEnum):
    REFERENCE = "reference"
    DISTRIBUTED = "distributed"
    LOCAL = "coordinator-local"


@dataclass(frozen=True, slots=True)
class Placement:
    table: str  # schema-qualified
    kind: Kind
    reason: str
    # For a distributed table: whose member_key its rows carry, when not plainly the row's member.
    key: str = ""

    @property
    def column(self) -> str | None:
        return DISTRIBUTION_COLUMN if self.kind is Kind.DISTRIBUTED else None


def _ref(table: str, reason: str) -> Placement:
    return Placement(table, Kind.REFERENCE, reason)


def _dist(table: str, reason: str, key: str = "") -> Placement:
    return Placement(table, Kind.DISTRIBUTED, reason, key)


def _local(table: str, reason: str) -> Placement:
    return Placement(table, Kind.LOCAL, reason)


PLACEMENTS: tuple[Placement, ...] = (
    # ledger: configuration
    _ref("ledger.programs", "read by every write (policies, system account ids); changed by operators"),
    _ref("ledger.rule_sets", "versioned earning rules, read to price every purchase"),
    _ref("ledger.partners", "coalition partners, read by partner earns and burns"),
    _ref("ledger.partner_terms", "a partner's versioned terms, read by every partner earn"),
    _ref(
        "ledger.partner_programs",
        "a partner's accounts and exact counters per program; hot counters live in partner_slots",
    ),
    _ref("ledger.partner_fundings", "prepaid top-ups, a few per partner and month; read by settlement"),
    _ref("ledger.settlements", "one row per settlement run"),
    _ref(
        "ledger.statement_lines",
        "per partner, program and period: few rows, joined with transactions by settlement and reports",
    ),
    _ref("ledger.segments", "segment definitions per program, read by the member view"),
    _ref("auth.api_keys", "read by every request to authenticate; written by operators"),
    # ledger: a member's rows
    _dist(
        "ledger.accounts",
        "a member's balance row, locked by every write: the co-location anchor",
        "the member's; a system account's, the key of its own member_ref ('' or partner:CODE:...)",
    ),
    _dist("ledger.transactions", "every write's journal row, read by statement and member view"),
    _dist(
        "ledger.postings",
        "a transaction's two legs, written with it",
        "the transaction's member, also for the leg on a system or partner account",
    ),
    _dist("ledger.lots", "a member's earned points by expiry, consumed by burns"),
    _dist(
        "ledger.lot_moves", "which lots a transaction took from, for reversals", "the transaction's member"
    ),
    _dist("ledger.holds", "a member's reserved points, captured or voided later"),
    _dist("ledger.tier_buckets", "a member's qualifying points by month, raised by earns"),
    _dist("ledger.tier_history", "a member's tier changes"),
    _dist("ledger.member_profiles", "a member's insights, refreshed member by member"),
    _dist("ledger.segment_members", "a member's segments, read by the member view"),
    _dist("ledger.expiry_notices", "a lot's notices, exactly once per lot and lead time"),
    _dist(
        "ledger.idempotency_keys",
        "written in the same transaction as the request's rows, so on their shard",
        "the request's member; for a request naming none (programs, partners, keys), member_key('')",
    ),
    _dist(
        "ledger.outbox",
        "one row per transaction, written with it (a coordinator row would make every write two-node);"
        " the sequencer orders them afterwards, a multi-shard job",
        "the transaction's member",
    ),
    _dist(
        "ledger.partner_slots",
        "partner counters raised by partner earns; one slot per shard keeps the raise on the member's shard",
        "a representative key of the slot's shard (readers add the slots up, multi-shard)",
    ),
    # ledger: jobs and queues
    _local("ledger.batches", "one row per uploaded file, the processor's lease and progress"),
    _local("ledger.batch_parts", "the processor's partitions of a file, leased with SKIP LOCKED"),
    _local("ledger.batch_staging", "parsed rows of a file, read by the processor chunk by chunk"),
    _local("ledger.batch_rejections", "a file's rejected lines, listed per batch"),
    _local(
        "ledger.webhooks",
        "the deliverer's queue (leased and advanced every round): a reference table would replicate each",
    ),
    # conversion: a saga per conversion, a small share of the ledger's volume
    _local("conversion.conversions", "the saga rows, leased across members by the runner"),
    _local("conversion.conversion_events", "a conversion's steps, written with its saga row"),
    _local("conversion.quotes", "short-lived quotes, read by the conversion that takes them"),
    _local("conversion.daily_usage", "per-member daily limits, raised in the saga row's transaction"),
    _local("conversion.idempotency_keys", "the conversion service's stored answers, with its saga rows"),
    _local("conversion.rate_pairs", "configuration read only with the service's local rows"),
    _local("conversion.rates", "configuration read only with the service's local rows"),
    _local("conversion.program_settings", "configuration read only with the service's local rows"),
    # catalog: a saga per redemption
    _local("catalog.rewards", "the catalog and its stock, taken in the redemption's transaction"),
    _local("catalog.voucher_codes", "codes issued in the redemption's transaction"),
    _local("catalog.member_usage", "per-member limits, raised in the redemption's transaction"),
    _local("catalog.redemptions", "the saga rows, leased across members by the runner"),
    _local("catalog.redemption_events", "a redemption's steps, written with its saga row"),
    _local("catalog.idempotency_keys", "the catalog service's stored answers, with its saga rows"),
    # migrations
    _local("public.alembic_version", "the migrations' bookkeeping, on the node that runs them"),
)

BY_TABLE: dict[str, Placement] = {p.table: p for p in PLACEMENTS}


def of_kind(kind: Kind) -> list[Placement]:
    return [p for p in PLACEMENTS if p.kind is kind]


class Rule(StrEnum):
    """A Citus rule a distributed table breaks (or a foreign key between placements Citus refuses)."""

    NO_KEY_COLUMN = "no member_key"
    KEY_COLUMN_TYPE = "member_key not integer NOT NULL"  # co-located tables must agree on the type
    UNIQUE_WITHOUT_KEY = "unique without member_key"  # primary key, unique or exclusion constraint, index
    TRIGGER = "trigger"
    FOREIGN_KEY = "foreign key refused"  # between two placements, as Citus refuses it


@dataclass(frozen=True, order=True, slots=True)
class Gap:
    table: str
    rule: Rule
    name: str  # the constraint, index, trigger or column


def _table(table: str, *unique: str, no_key: bool = False, triggers: tuple[str, ...] = ()) -> set[Gap]:
    """One table's gaps: its unique keys without member_key, whether it lacks the column, its triggers."""
    gaps = {Gap(table, Rule.UNIQUE_WITHOUT_KEY, name) for name in unique}
    gaps |= {Gap(table, Rule.TRIGGER, name) for name in triggers}
    return gaps | ({Gap(table, Rule.NO_KEY_COLUMN, DISTRIBUTION_COLUMN)} if no_key else set())


# What blocks distribution today, exactly (the test computes it from pg_catalog and compares): fixing
# a gap must remove it here, and a new table, index or trigger cannot add one silently (so nothing
# here is derived from PLACEMENTS).
KNOWN_GAPS: frozenset[Gap] = frozenset(
    set().union(
        _table("ledger.accounts", "accounts_pkey", "accounts_program_kind_member", no_key=True),
        _table(
            "ledger.transactions",
            "transactions_pkey",
            "transactions_external",
            no_key=True,
            triggers=("transactions_outbox",),  # writes the outbox (ledger_service/sql/events.sql)
        ),
        _table("ledger.postings", "postings_pkey", no_key=True),
        _table("ledger.lots", "lots_pkey", no_key=True),
        _table("ledger.lot_moves", "lot_moves_pkey", no_key=True),
        _table("ledger.holds", "holds_pkey", no_key=True),
        _table("ledger.tier_buckets", "tier_buckets_pkey", no_key=True),
        _table("ledger.tier_history", "tier_history_pkey", no_key=True),
        _table("ledger.member_profiles", "member_profiles_pkey", no_key=True),
        _table("ledger.segment_members", "segment_members_pkey", no_key=True),
        _table("ledger.expiry_notices", "expiry_notices_pkey", no_key=True),
        _table("ledger.idempotency_keys", "idempotency_keys_pkey", no_key=True),
        _table("ledger.outbox", "outbox_pkey", "outbox_seq_key", no_key=True),
        _table("ledger.partner_slots", "partner_slots_pkey", no_key=True),
    )
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def citus_commands(shard_count: int = DEFAULT_SHARD_COUNT) -> list[str]:
    """The statements that apply the placement on a Citus coordinator, in the order foreign keys and
    co-location need: reference tables before the tables whose foreign keys point at them, the
    co-location anchor first among the distributed ones. Not run here (no Citus in the test
    environment); they fail until KNOWN_GAPS is empty (docs/scale-out.md)."""
    lines = [
        "-- The coordinator must be in the metadata for coordinator-local tables to reference reference"
        " tables; replace the host.",
        "SELECT citus_set_coordinator_host('coordinator.example', 5432);",
        f"SET citus.shard_count = {shard_count};",
    ]
    lines += [f"SELECT create_reference_table({_literal(p.table)});" for p in of_kind(Kind.REFERENCE)]
    distributed = sorted(of_kind(Kind.DISTRIBUTED), key=lambda p: p.table != COLOCATE_WITH)
    for p in distributed:
        colocate = "none" if p.table == COLOCATE_WITH else COLOCATE_WITH
        lines.append(
            f"SELECT create_distributed_table({_literal(p.table)}, {_literal(DISTRIBUTION_COLUMN)},"
            f" colocate_with => {_literal(colocate)});"
        )
    # Tables tied by foreign keys join the metadata together (cascade); a table already brought in
    # by an earlier one's cascade is skipped.
    for p in of_kind(Kind.LOCAL):
        lines.append(
            f"SELECT citus_add_local_table_to_metadata({_literal(p.table)}, cascade_via_foreign_keys => true)"
            f" WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition"
            f" WHERE logicalrelid = {_literal(p.table)}::regclass);"
        )
    return lines


def markdown() -> list[str]:
    """The placement and the known gaps as Markdown tables (docs/scale-out.md holds them verbatim)."""
    lines = ["| table | placement | rows' `member_key` | why |", "|---|---|---|---|"]
    for p in PLACEMENTS:
        key = (p.key or "the row's member") if p.kind is Kind.DISTRIBUTED else ""
        lines.append(f"| `{p.table}` | {p.kind} | {key} | {p.reason} |")
    rules = [rule for rule in Rule if any(gap.rule is rule for gap in KNOWN_GAPS)]
    lines += ["", "| table | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for table in sorted({gap.table for gap in KNOWN_GAPS}, key=list(BY_TABLE).index):
        cells = [
            ", ".join(
                f"`{gap.name}`" for gap in sorted(KNOWN_GAPS) if gap.table == table and gap.rule is rule
            )
            for rule in rules
        ]
        lines.append(f"| `{table}` | " + " | ".join(cells) + " |")
    return lines
