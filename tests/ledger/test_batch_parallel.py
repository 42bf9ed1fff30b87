"""Batches posted by member partition, several workers at once (issue 17): each row once, a worker
that dies mid-chunk resumed by another, and the rows of one member in file order."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from ledger_service.batches.processor import BatchProcessor
from services.db import Database
from tests.conftest import member
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.test_batches import HEADER, _program, upload

MEMBERS = 37


def _file(program: str, prefix: str, n: int) -> tuple[bytes, dict[str, int]]:
    """n earns over MEMBERS members, each followed two lines later by a refund of 1 point of it on
    every fifth; returns the file and each member's expected balance."""
    rows = [HEADER]
    balances: dict[str, int] = {}
    for i in range(n):
        who = f"{prefix.lower()}{i % MEMBERS}"
        points = 2 + i % 7
        rows.append(f"{prefix}-{i:06d},earn,,{program},,{who},,,,,,,{points}")
        balances[who] = balances.get(who, 0) + points
        if i % 5 == 2:  # refunds the earn two rows up, a different member's: they cross partitions
            j = i - 2
            rows.append(f"{prefix}-R{j:06d},reverse,{prefix}-{j:06d},{program},,,,,,,,,1")
            balances[f"{prefix.lower()}{j % MEMBERS}"] -= 1
    return ("\n".join(rows) + "\n").encode(), balances


async def _hold(db: Database, batch_id: str) -> None:
    async with db.driver() as conn:  # no processor claims it: the test drives it
        await conn.execute(
            "UPDATE ledger.batches SET lease_until = now() + interval '1 hour' WHERE id = $1::uuid", batch_id
        )


async def _check(
    client: httpx.AsyncClient, ledger_app: Any, batch_id: str, program: str, n: int, balances: dict[str, int]
) -> None:
    done = (await client.get(f"/v1/batches/{batch_id}")).json()
    refunds = len(range(2, n, 5))
    assert done["status"] == "completed", done
    assert (done["posted"], done["duplicates"], done["rejected"]) == (n + refunds, 0, 0), done
    assert done["points_posted"] == sum(balances.values())
    for who, balance in balances.items():
        assert (await member(client, program, who))["balance"] == balance, who
    async with ledger_app.state.db.driver() as conn:
        once = await conn.fetchval(
            "SELECT count(*) = count(DISTINCT external_id) FROM ledger.transactions t"
            " JOIN ledger.programs p ON p.id = t.program_id WHERE p.code = $1 AND t.type = 'earn'",
            program,
        )
        parts = await conn.fetch(
            "SELECT b.last_line, x.next_line FROM ledger.batch_parts x"
            " JOIN ledger.batches b ON b.id = x.batch_id WHERE x.batch_id = $1::uuid",
            batch_id,
        )
    assert once
    assert len(parts) == 4 and all(p["next_line"] == p["last_line"] for p in parts)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_two_processors_of_two_workers_post_each_row_once(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await _program(client)
    n = 1500
    content, balances = _file(program, "PW", n)
    batch_id = (await upload(client, content)).json()["id"]
    await _hold(ledger_app.state.db, batch_id)
    processors = [BatchProcessor(ledger_app.state.db, earn_chunk=40, workers=2, parts=4) for _ in range(2)]
    await asyncio.gather(*(p._process(UUID(batch_id)) for p in processors))
    await _check(client, ledger_app, batch_id, program, n, balances)


async def test_a_worker_that_dies_mid_chunk_leaves_its_partition_to_the_others(
    client: httpx.AsyncClient, ledger_app: Any, database_url: str
) -> None:
    """A worker posts a chunk of a partition and dies before it commits: the other partitions go on
    meanwhile, its rows are rolled back, and a worker takes the partition from where it stood."""
    program = await _program(client)
    n = 1200
    content, balances = _file(program, "PD", n)
    batch_id = (await upload(client, content)).json()["id"]
    await _hold(ledger_app.state.db, batch_id)
    async with ledger_app.state.db.driver() as conn:
        await conn.fetchval("SELECT ledger.batch_parts_init($1::uuid, 4)", batch_id)
    dying = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    tx = dying.transaction()
    await tx.start()
    # What ledger.process_batch_part does, up to the middle of its chunk: partition 1 held, its rows
    # of lines (0, 400] posted, the cursor not yet moved.
    chunk = await dying.fetchrow(
        "SELECT part FROM ledger.batch_parts WHERE batch_id = $1::uuid AND part = 1 FOR UPDATE", batch_id
    )
    half = await dying.fetchrow(
        "SELECT * FROM ledger.post_batch_lines("
        " (SELECT b FROM ledger.batches b WHERE b.id = $1::uuid), 0, 400, 1, 4)",
        batch_id,
    )
    assert half["posted"] > 0
    processor = BatchProcessor(ledger_app.state.db, earn_chunk=25, workers=2, parts=4)
    task = asyncio.create_task(processor._process(UUID(batch_id)))
    async with ledger_app.state.db.driver() as conn:
        for _ in range(300):  # the other three partitions reach the end of the file
            others = await conn.fetch(
                "SELECT x.next_line, b.last_line FROM ledger.batch_parts x JOIN ledger.batches b"
                " ON b.id = x.batch_id WHERE x.batch_id = $1::uuid AND x.part <> $2",
                batch_id,
                chunk["part"],
            )
            if all(o["next_line"] == o["last_line"] for o in others):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the other partitions did not go on: {others}")
        stuck = await conn.fetchval(
            "SELECT next_line FROM ledger.batch_parts WHERE batch_id = $1::uuid AND part = $2",
            batch_id,
            chunk["part"],
        )
    assert stuck == 0 and not task.done()
    dying.terminate()  # the worker dies: PostgreSQL rolls its chunk back and frees the partition
    assert await asyncio.wait_for(task, 60)
    await _check(client, ledger_app, batch_id, program, n, balances)


async def test_the_rows_of_one_member_are_posted_in_file_order(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """Small chunks, so each member's rows are spread over many chunks of its partition: its
    postings follow the file's lines, and every refund finds the purchase it refers to."""
    program = await _program(client)
    n = 900
    content, balances = _file(program, "PO", n)
    batch_id = (await upload(client, content)).json()["id"]
    await _hold(ledger_app.state.db, batch_id)
    await BatchProcessor(ledger_app.state.db, earn_chunk=3, workers=3, parts=4)._process(UUID(batch_id))
    await _check(client, ledger_app, batch_id, program, n, balances)
    async with ledger_app.state.db.driver() as conn:
        rows = await conn.fetch(
            "SELECT a.member_ref, t.external_id FROM ledger.postings po"
            " JOIN ledger.transactions t ON t.id = po.txn_id JOIN ledger.accounts a ON a.id = po.account_id"
            " JOIN ledger.programs p ON p.id = a.program_id"
            " WHERE p.code = $1 AND a.kind = 'member' AND t.type = 'earn' ORDER BY po.id",
            program,
        )
    by_member: dict[str, list[str]] = {}
    for r in rows:
        by_member.setdefault(r["member_ref"], []).append(r["external_id"])
    assert len(by_member) == MEMBERS
    for who, ids in by_member.items():
        assert ids == sorted(ids), who  # external ids are zero-padded line order
