"""Operating batches (issue 13, DESIGN §4 "Changes in force"): the list, per-reason counts and filter,
file line numbers, and a re-sent file that counts every row it already posted as a duplicate."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson

from ledger_service.batches.schemas import REJECTION_REASONS
from tests.conftest import assert_problem, make_key, member
from tests.ledger.test_batches import HEADER, _program, upload, wait_done

ROOT = Path(__file__).resolve().parents[2]


async def test_a_resent_file_counts_every_row_it_posted_as_a_duplicate(
    client: httpx.AsyncClient, ledger_app
) -> None:
    """Issue 12 item 6: the reverse rows of a re-sent file came back as nothing_to_reverse (a whole
    reversal: nothing is left of the original) and idempotency_key_reused (a partial one: what is
    left no longer gives the first upload's points)."""
    program = await _program(client)
    rows = [
        HEADER,
        f"RS-1,earn,,{program},,ann,,,,,,,100",
        f"RS-2,earn,,{program},,ann,10000,CNY,,,,,",  # 100 points
        f"RS-3,reverse,RS-1,{program},,,,,,,,,",  # whole: neither points nor amount_minor
        f"RS-4,reverse,RS-2,{program},,,8000,CNY,,,,,",  # 80 of 100
        f"RS-5,reverse,RS-2,{program},,,,,,,,,",  # what is left of RS-2: 20
    ]
    content = ("\n".join(rows) + "\n").encode()
    first = await wait_done(client, (await upload(client, content)).json()["id"], drive=ledger_app)
    assert (first["posted"], first["duplicates"], first["rejected"]) == (5, 0, 0), first
    assert (await member(client, program, "ann"))["balance"] == 0
    again = await wait_done(client, (await upload(client, content)).json()["id"], drive=ledger_app)
    assert (again["posted"], again["duplicates"], again["rejected"]) == (0, 5, 0), again
    assert again["rejected_by_reason"] == {} and again["points_posted"] == 0
    assert (await member(client, program, "ann"))["balance"] == 0


async def test_status_counts_rejections_by_reason_and_rejections_filter_by_reason(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await _program(client)
    rows = [
        HEADER,
        f"RR-1,earn,,{program},,bo,abc,CNY,,,,,",  # line 2: bad_amount
        "",  # line 3: blank, still a line of the file
        "RR-2,earn,,NOPE_XYZ,,bo,100,CNY,,,,,",  # line 4: unknown_program
        f"RR-3,earn,,{program},,bo,,,,,,,10",  # line 5: posted
        "RR-4,earn,,NOPE_XYZ,,bo,100,CNY,,,,,",  # line 6: unknown_program
        f"RR-5,reverse,RR-404,{program},,,,,,,,,",  # line 7: unknown_original
        f"RR-6,reverse,RR-3,{program},,,,,,,,,bad",  # line 8: a reverse row rejected by the parser
    ]
    batch = (await upload(client, ("\n".join(rows) + "\n").encode())).json()
    assert batch["rows"] == 6  # data rows: not the header, not the blank line
    done = await wait_done(client, batch["id"], drive=ledger_app)
    assert done["rejected_by_reason"] == {
        "unknown_program": 2,
        "bad_amount": 1,
        "bad_points": 1,
        "unknown_original": 1,
    }
    assert next(iter(done["rejected_by_reason"])) == "unknown_program"  # most frequent first
    assert done["processed"] == done["rows"] == 6  # rejected reverse rows are counted as processed
    base = f"/v1/batches/{batch['id']}/rejections"
    filtered = (await client.get(base, params={"reason": "unknown_program"})).json()
    assert [(x["line"], x["reason"]) for x in filtered["data"]] == [
        (4, "unknown_program"),
        (6, "unknown_program"),
    ]
    everything = (await client.get(base)).json()["data"]
    assert [x["line"] for x in everything] == [2, 4, 6, 7, 8]
    page = (await client.get(base, params={"reason": "unknown_program", "limit": 1})).json()
    assert [x["line"] for x in page["data"]] == [4] and page["next_cursor"]
    rest = (
        await client.get(base, params={"reason": "unknown_program", "cursor": page["next_cursor"]})
    ).json()
    assert [x["line"] for x in rest["data"]] == [6] and rest["next_cursor"] is None
    assert (await client.get(base, params={"reason": "bad_points"})).json()["data"][0]["line"] == 8
    assert_problem(await client.get(base, params={"reason": "no_such_reason"}), 422, "validation_error")


async def test_ndjson_lines_are_file_lines(client: httpx.AsyncClient, ledger_app) -> None:
    program = await _program(client)
    lines = [
        orjson.dumps({"external_id": "NJ-1", "program": program, "member_ref": "cy", "points": 5}),
        b"not json",
        b"",
        orjson.dumps({"external_id": "NJ-2", "program": program, "member_ref": "cy", "points": -1}),
    ]
    r = await upload(client, b"\n".join(lines) + b"\n", content_type="application/x-ndjson")
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    rejections = (await client.get(f"/v1/batches/{done['id']}/rejections")).json()["data"]
    assert [(x["line"], x["reason"]) for x in rejections] == [(2, "malformed_line"), (4, "bad_points")]
    assert done["rows"] == 3


async def test_batches_are_listed_newest_first_by_status_and_only_to_their_uploader(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await _program(client)
    uploader = await make_key(ledger_app, ["ledger:batch"], programs=[program])
    other = await make_key(ledger_app, ["ledger:batch"], programs=[program])
    ids = []
    for i in range(3):
        content = f"{HEADER}\nLS-{i},earn,,{program},,dee,,,,,,,1\n".encode()
        r = await upload(client, content, auth=uploader)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    await wait_done(client, ids[0], drive=ledger_app)

    def as_(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    page = (await client.get("/v1/batches", params={"limit": 2}, headers=as_(uploader))).json()
    assert [b["id"] for b in page["data"]] == [ids[2], ids[1]]
    assert page["data"][0]["rejected_by_reason"] == {}
    rest = (
        await client.get(
            "/v1/batches", params={"limit": 2, "cursor": page["next_cursor"]}, headers=as_(uploader)
        )
    ).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["next_cursor"] is None
    assert (await client.get("/v1/batches", headers=as_(other))).json()["data"] == []
    admin_view = [b["id"] for b in (await client.get("/v1/batches", params={"limit": 200})).json()["data"]]
    assert admin_view.index(ids[2]) < admin_view.index(ids[1]) < admin_view.index(ids[0])
    completed = (
        await client.get("/v1/batches", params={"status": "completed"}, headers=as_(uploader))
    ).json()
    assert {b["status"] for b in completed["data"]} == {"completed"}
    assert ids[0] in {b["id"] for b in completed["data"]}
    assert_problem(await client.get("/v1/batches", params={"status": "nope"}), 422, "validation_error")
    assert_problem(await client.get("/v1/batches", params={"cursor": "%%%"}), 400, "invalid_cursor")


def test_every_reason_a_row_can_get_is_a_known_rejection_reason() -> None:
    """`?reason=` refuses reasons it does not know: every reason the parser, the pricer and the SQL
    of reverse rows can give must be in REJECTION_REASONS."""
    found: set[str] = set()
    parsing = (ROOT / "ledger_service/batches/parsing.py").read_text()
    found |= set(re.findall(r'bad\("([a-z_]+)"\)', parsing))
    found |= set(re.findall(r'reject="([a-z_]+)"', parsing))
    service = (ROOT / "ledger_service/batches/service.py").read_text()
    found |= set(re.findall(r'row\.reject = "([a-z_]+)"', service))
    sql = (ROOT / "ledger_service/sql/batches.sql").read_text()
    found |= set(re.findall(r"reason := '([a-z_]+)'", sql))
    assert len(found) > 20, found
    assert found <= set(REJECTION_REASONS), found - set(REJECTION_REASONS)


async def test_the_completion_log_line_has_the_counts(client: httpx.AsyncClient, ledger_app, caplog) -> None:
    import logging

    program = await _program(client)
    content = f"{HEADER}\nCL-1,earn,,{program},,eve,,,,,,,3\nCL-2,earn,,NOPE_XYZ,,eve,,,,,,,3\n".encode()
    with caplog.at_level(logging.INFO, logger="jifen.ledger.batches"):
        batch = await wait_done(client, (await upload(client, content)).json()["id"], drive=ledger_app)
    done = [r for r in caplog.records if r.msg.startswith("batch completed") and r.batch == batch["id"]]
    assert len(done) == 1
    assert done[0].getMessage() == "batch completed: 2 rows, 1 posted, 0 duplicates, 1 rejected"
    assert (done[0].posted, done[0].rejected, done[0].points_posted) == (1, 1, 3)
