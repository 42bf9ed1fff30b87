"""Card-issuer batches (issue 4): exact counts, exactly once under re-sends, restarts, tokenized cards."""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import orjson

from tests.conftest import create_program, make_key, member, new_key, put_rules
from tests.harness import api_client
from tests.ledger.invariants import check_ledger_invariants

HEADER = (
    "external_id,type,original_external_id,program,card_number,member_ref,amount_minor,currency,merchant_id,"
    "mcc,channel,occurred_at,points"
)
CARD = "6222020200112233445"


def csv_file(program: str, prefix: str) -> bytes:
    rows = [
        f"{prefix}-1,earn,,{program},{CARD},,12345,CNY,M1,5814,pos,2026-11-28T10:00:00Z,",  # 123 points
        f"{prefix}-2,earn,,{program},,alice,50000,CNY,M2,4511,online,2026-11-28T11:30:00Z,",  # 10x: 5000
        f"{prefix}-2,earn,,{program},,alice,50000,CNY,M2,4511,online,2026-11-28T11:30:00Z,",  # duplicate
        f"{prefix}-3,earn,,NOPE_XYZ,,alice,100,CNY,,,,,",  # unknown program
        f"{prefix}-4,earn,,{program},,bob,,,,,,,70",  # explicit points
        "not,a,valid,line",  # malformed
        f"{prefix}-5,reverse,{prefix}-2,{program},,alice,20000,CNY,,,,2026-11-28T18:00:00Z,",  # 40%: 2000
        f"{prefix}-6,earn,,{program},,carol,abc,CNY,,,,,",  # bad amount
        f"{prefix}-7,reverse,{prefix}-404,{program},,carol,100,CNY,,,,,",  # unknown original
        f"{prefix}-8,earn,,{program},,dave,100,USD,,,,,",  # currency mismatch
        f"{prefix}-9,earn,,{program},,erin,999,CNY,,,,2099-01-01T00:00:00Z,",  # future
    ]
    return ("\n".join([HEADER, *rows]) + "\n").encode()


async def _program(client: httpx.AsyncClient) -> str:
    program = await create_program(client)
    await put_rules(
        client,
        program,
        base={"points": 1, "per_amount_minor": 100},
        rules=[{"name": "air 10x", "match": {"mcc": "4511"}, "multiplier": "10"}],
    )
    return program


async def upload(
    client: httpx.AsyncClient,
    content: bytes,
    *,
    key: str | None = None,
    content_type: str = "text/csv",
    auth: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": key or new_key(), "Content-Type": content_type}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    return await client.post("/v1/batches", content=content, headers=headers)


async def wait_done(client: httpx.AsyncClient, batch_id: str, timeout: float = 60, *, drive=None) -> dict:
    """Waits for a batch to finish; with `drive` (the in-process app), runs its processor meanwhile."""
    from ledger_service.batches.processor import BatchProcessor

    for _ in range(int(timeout / 0.1)):
        if drive is not None:
            await BatchProcessor(drive.state.db).run_once()
        body = (await client.get(f"/v1/batches/{batch_id}")).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish: {body}")


async def test_a_file_gives_exact_counts_balances_and_rejections(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await _program(client)
    r = await upload(client, csv_file(program, "A"))
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["status"] == "received" and batch["rows"] == 11
    done = await wait_done(client, batch["id"], drive=ledger_app)
    assert done["status"] == "completed" and done["progress"] == 1.0
    assert (done["posted"], done["duplicates"], done["rejected"]) == (4, 1, 6)
    assert done["points_posted"] == 123 + 5000 + 70 - 2000
    rejections = (await client.get(f"/v1/batches/{batch['id']}/rejections")).json()["data"]
    assert [(x["line"], x["reason"]) for x in rejections] == [  # lines of the file: the header is 1
        (5, "unknown_program"),
        (7, "malformed_line"),
        (9, "bad_amount"),
        (10, "unknown_original"),
        (11, "currency_mismatch"),
        (12, "occurred_in_future"),
    ]
    assert (await member(client, program, "alice"))["balance"] == 3000
    assert (await member(client, program, "bob"))["balance"] == 70
    # the card number became a token; it is nowhere in the database
    async with ledger_app.state.db.driver() as conn:
        token = await conn.fetchval(
            "SELECT member_ref FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id"
            " WHERE p.code = $1 AND member_ref LIKE 'card_%'",
            program,
        )
        leaks = await conn.fetchval(
            "SELECT count(*) FROM ledger.transactions WHERE member_ref LIKE $1 OR reference LIKE $1",
            f"%{CARD}%",
        )
    assert token is not None and CARD not in token and leaks == 0
    assert (await member(client, program, token))["balance"] == 123
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_the_same_file_twice_and_twice_at_once_posts_once(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await _program(client)
    content = csv_file(program, "B")
    first = await upload(client, content)
    await wait_done(client, first.json()["id"], drive=ledger_app)
    again = await upload(client, content)  # re-sent with a new key: every row is a duplicate
    done = await wait_done(client, again.json()["id"], drive=ledger_app)
    assert (done["posted"], done["duplicates"]) == (0, 5)
    two = await asyncio.gather(upload(client, csv_file(program, "C")), upload(client, csv_file(program, "C")))
    # two processors at once, each taking one of the two uploads
    from ledger_service.batches.processor import BatchProcessor

    await asyncio.gather(*(BatchProcessor(ledger_app.state.db).run_once() for _ in range(2)))
    results = [await wait_done(client, r.json()["id"], drive=ledger_app) for r in two]
    # Each row once between the two (partitions of both are posted at once: either may post a row).
    assert sum(r["posted"] for r in results) == 4
    assert sum(r["duplicates"] for r in results) == 1 + 5
    assert (await member(client, program, "alice"))["balance"] == 2 * 3000
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_upload_idempotency_key(client: httpx.AsyncClient) -> None:
    program = await _program(client)
    key = new_key()
    content = csv_file(program, "D")
    first = await upload(client, content, key=key)
    replay = await upload(client, content, key=key)
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    other = await upload(client, csv_file(program, "E"), key=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


async def test_ndjson_and_bad_uploads(client: httpx.AsyncClient, ledger_app) -> None:
    program = await _program(client)
    lines = [
        {"external_id": "N-1", "program": program, "member_ref": "nd", "points": 5},
        {
            "external_id": "N-2",
            "program": program,
            "member_ref": "nd",
            "amount_minor": 1000,
            "currency": "CNY",
        },
        {"external_id": "N-3", "program": program, "member_ref": "nd", "points": "x"},
        {"external_id": "N-4", "program": program, "member_ref": "nd", "surprise": 1},
    ]
    content = b"\n".join(orjson.dumps(x) for x in lines)
    r = await upload(client, content, content_type="application/x-ndjson")
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    assert (done["posted"], done["rejected"]) == (2, 2)
    assert (await member(client, program, "nd"))["balance"] == 15
    r = await upload(client, b"a,b,c\n1,2,3\n")
    assert r.status_code == 400 and r.json()["code"] == "invalid_batch_header"
    r = await upload(client, b"", content_type="text/csv")
    assert r.status_code == 400
    r = await upload(client, b"{}", content_type="application/xml")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = await client.post("/v1/batches", content=b"x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_required"
    reader = await make_key(ledger_app, ["ledger:read", "ledger:earn"])
    r = await upload(client, csv_file(program, "F"), auth=reader)
    assert r.status_code == 403
    assert (await client.get("/v1/batches/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_a_killed_service_resumes_the_batch(
    database_url, client: httpx.AsyncClient, admin_key, ledger_app
) -> None:
    """A batch that a (crashed) processor left half done is finished by the next one, exactly once."""
    from ledger_service.batches.processor import BatchProcessor

    program = await _program(client)
    rows = [HEADER] + [f"K-{i},earn,,{program},,k{i % 30},,,,,,,{1 + i % 7}" for i in range(3000)]
    r = await upload(client, ("\n".join(rows) + "\n").encode())
    batch_id = r.json()["id"]
    # Simulate the crash: a processor that did only the first chunk, then died holding the lease.
    async with ledger_app.state.db.driver() as conn:
        await conn.execute(
            "UPDATE ledger.batches SET lease_until = now() + interval '1 hour' WHERE id = $1::uuid", batch_id
        )
        await conn.execute("SELECT * FROM ledger.process_batch_earns($1::uuid, 0, 1000)", batch_id)
        await conn.execute(
            "UPDATE ledger.batches SET status = 'processing', lease_until = now() - interval '1 s'"
            " WHERE id = $1::uuid",
            batch_id,
        )
    await BatchProcessor(ledger_app.state.db, earn_chunk=700).run_once()
    done = await wait_done(client, batch_id, drive=ledger_app)
    assert (done["posted"], done["duplicates"], done["rejected"]) == (3000, 0, 0)
    expected = sum(1 + i % 7 for i in range(3000))
    assert done["points_posted"] == expected
    total = sum([(await member(client, program, f"k{i}"))["balance"] for i in range(30)])
    assert total == expected
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_ledger_process_killed_mid_batch_resumes_after_restart(
    database_url, client: httpx.AsyncClient, admin_key, ledger_app
) -> None:
    from tests.harness import ServiceProcess

    program = await _program(client)
    n = 40_000
    rows = [HEADER] + [f"Z-{i},earn,,{program},,z{i % 97},,,,,,,{1 + i % 5}" for i in range(n)]
    content = ("\n".join(rows) + "\n").encode()
    env = {"JIFEN_BATCH_CHUNK_ROWS": "1000", "JIFEN_BATCH_INTERVAL_S": "0.05"}
    ledger = ServiceProcess("ledger", database_url, env=env).start()
    try:
        async with api_client(ledger.url, admin_key) as http:
            r = await http.post(
                "/v1/batches",
                content=content,
                headers={"Idempotency-Key": new_key(), "Content-Type": "text/csv"},
            )
            assert r.status_code == 202, r.text
            batch_id = r.json()["id"]
            for _ in range(2000):
                state = (await http.get(f"/v1/batches/{batch_id}")).json()
                if state["processed"] > 0:
                    break
                await asyncio.sleep(0.005)
        assert 0 < state["processed"] < n, state
        ledger.kill()
        await asyncio.sleep(1.0)  # a chunk the dead process had sent may still commit in PostgreSQL
        async with ledger_app.state.db.driver() as conn:  # as if the dead process's lease had run out
            await conn.execute("UPDATE ledger.batches SET lease_until = now() WHERE id = $1::uuid", batch_id)
        ledger.start()
        done = await wait_done(client, batch_id)
    finally:
        ledger.stop()
    assert (done["status"], done["posted"], done["duplicates"], done["rejected"]) == ("completed", n, 0, 0)
    expected = sum(1 + i % 5 for i in range(n))
    assert done["points_posted"] == expected
    assert sum([(await member(client, program, f"z{i}"))["balance"] for i in range(97)]) == expected
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_two_processors_on_one_batch_apply_each_chunk_once(
    client: httpx.AsyncClient, ledger_app
) -> None:
    """A lease that runs out under a live processor lets a second one in: each chunk of earns and of
    reverse rows is still applied, and counted, once."""
    from ledger_service.batches.processor import BatchProcessor

    program = await _program(client)
    rows = [HEADER] + [f"T-{i},earn,,{program},,t{i % 40},,,,,,,{1 + i % 5}" for i in range(2400)]
    rows += [f"R-{i},reverse,T-{i},{program},,t{i % 40},,,,,,,1" for i in range(0, 2400, 10)]
    r = await upload(client, ("\n".join(rows) + "\n").encode())
    batch_id = r.json()["id"]
    async with ledger_app.state.db.driver() as conn:  # neither processor needs to claim it
        await conn.execute(
            "UPDATE ledger.batches SET lease_until = now() + interval '1 hour' WHERE id = $1::uuid", batch_id
        )
    processors = [BatchProcessor(ledger_app.state.db, earn_chunk=300) for _ in range(2)]
    await asyncio.gather(*(p._process(UUID(batch_id)) for p in processors))
    done = (await client.get(f"/v1/batches/{batch_id}")).json()
    assert done["status"] == "completed", done
    assert (done["posted"], done["duplicates"], done["rejected"]) == (2400 + 240, 0, 0)
    expected = sum(1 + i % 5 for i in range(2400)) - 240
    assert done["points_posted"] == expected
    total = sum([(await member(client, program, f"t{i}"))["balance"] for i in range(40)])
    assert total == expected
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_a_stale_processor_never_takes_refunds_past_the_posted_earns(
    client: httpx.AsyncClient, ledger_app
) -> None:
    """Processor A read the batch before B posted lines 2-3 (the header is line 1); A's earn chunk
    (0, 5] is skipped by the guard, and its reverse rows must stop at the posted earns: the refund on
    line 5 of the earn on line 4 is applied once B has posted line 4, not rejected as unknown_original."""
    program = await _program(client)
    rows = (
        [HEADER]
        + [f"S-{i},earn,,{program},,s,,,,,,,10" for i in (1, 2, 3)]
        + [f"S-R,reverse,S-3,{program},,s,,,,,,,"]
    )
    r = await upload(client, ("\n".join(rows) + "\n").encode())
    batch_id = r.json()["id"]
    db = ledger_app.state.db
    async with db.driver() as conn:
        await conn.execute(
            "UPDATE ledger.batches SET lease_until = now() + interval '1 hour' WHERE id = $1::uuid", batch_id
        )
        await conn.fetchrow("SELECT * FROM ledger.process_batch_earns($1::uuid, 0, 3)", batch_id)  # B
        await conn.fetchrow(
            "SELECT * FROM ledger.process_batch_earns($1::uuid, 0, 5)", batch_id
        )  # A: skipped
        await conn.fetchrow("SELECT * FROM ledger.process_batch_reversals($1::uuid, 0, 5, 50)", batch_id)  # A
        await conn.fetchrow("SELECT * FROM ledger.process_batch_earns($1::uuid, 3, 5)", batch_id)  # B
        after = await conn.fetchval(
            "SELECT reversals_after FROM ledger.batches WHERE id = $1::uuid", batch_id
        )
        await conn.fetchrow(
            "SELECT * FROM ledger.process_batch_reversals($1::uuid, $2, 5, 50)", batch_id, after
        )
    rejections = (await client.get(f"/v1/batches/{batch_id}/rejections")).json()["data"]
    assert rejections == []
    assert (await member(client, program, "s"))["balance"] == 20
