"""Issue 12 item 1: one oversized earn broke a program's report for good (bigint out of range in the
report's sums). Programs have max_points_per_transaction (DESIGN §4) and report sums are numeric."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import assert_problem, create_program, earn, member, post
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.test_batches import HEADER, _program, upload, wait_done

MAX = 2**63 - 1
DEFAULT = 100_000_000


async def test_the_default_limit_refuses_every_kind_of_move(client: httpx.AsyncClient, ledger_app) -> None:
    program = await create_program(client)
    assert (await client.get(f"/v1/programs/{program}")).json()["max_points_per_transaction"] == DEFAULT
    await earn(client, program, "lim", DEFAULT)  # the limit itself is allowed
    over = DEFAULT + 1
    for path, body in [
        ("/v1/earn", {"member_ref": "lim", "points": over, "reference": "o"}),
        ("/v1/earn", {"member_ref": "lim", "points": MAX, "reference": "o"}),
        ("/v1/burn", {"member_ref": "lim", "points": over, "reference": "o"}),
        ("/v1/holds", {"member_ref": "lim", "points": over, "reference": "o"}),
        ("/v1/adjustments", {"member_ref": "lim", "points": over, "reason": "r"}),
        ("/v1/adjustments", {"member_ref": "lim", "points": -over, "reason": "r"}),
        ("/v1/transfers", {"from_member_ref": "lim", "to_member_ref": "other", "points": over}),
    ]:
        r = await post(client, path, {"program": program, **body})
        assert_problem(r, 422, "points_limit_exceeded")
    view = await member(client, program, "lim")
    assert view["balance"] == DEFAULT and view["held"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_the_limit_is_set_on_create_and_patch(client: httpx.AsyncClient) -> None:
    program = await create_program(client, max_points_per_transaction=1000)
    await earn(client, program, "pat", 1000)
    assert_problem(
        await post(
            client, "/v1/earn", {"program": program, "member_ref": "pat", "points": 1001, "reference": "o"}
        ),
        422,
        "points_limit_exceeded",
    )
    r = await client.patch(f"/v1/programs/{program}", json={"max_points_per_transaction": 5000})
    assert r.status_code == 200, r.text
    assert r.json()["max_points_per_transaction"] == 5000
    await earn(client, program, "pat", 5000)
    for bad in (0, -1, MAX + 1, "1000", None):
        r = await client.patch(f"/v1/programs/{program}", json={"max_points_per_transaction": bad})
        assert_problem(r, 422, "validation_error")


async def test_concurrent_earns_above_the_limit_are_refused_alike(client: httpx.AsyncClient) -> None:
    """Coalesced earns go set-based (ledger.earn_set); one above the limit is left to ledger.execute."""
    import asyncio

    program = await create_program(client, max_points_per_transaction=100)
    bodies = [
        {"program": program, "member_ref": f"c{i % 3}", "points": 100 + (i % 2), "reference": f"r{i}"}
        for i in range(20)
    ]
    answers = await asyncio.gather(*(post(client, "/v1/earn", b) for b in bodies))
    for body, r in zip(bodies, answers, strict=True):
        if body["points"] > 100:
            assert_problem(r, 422, "points_limit_exceeded")
        else:
            assert r.status_code == 201, r.text
    assert sum([(await member(client, program, f"c{i}"))["balance"] for i in range(3)]) == 10 * 100


async def test_a_batch_row_above_the_limit_is_rejected(client: httpx.AsyncClient, ledger_app) -> None:
    program = await _program(client)
    r = await client.patch(f"/v1/programs/{program}", json={"max_points_per_transaction": 500})
    assert r.status_code == 200, r.text
    rows = [
        HEADER,
        f"PL-1,earn,,{program},,bat,,,,,,,500",
        f"PL-2,earn,,{program},,bat,,,,,,,501",  # line 3: above the limit
        f"PL-3,earn,,{program},,bat,1000000,CNY,,,,,",  # line 4: priced at 10,000 points
    ]
    batch = (await upload(client, ("\n".join(rows) + "\n").encode())).json()
    done = await wait_done(client, batch["id"], drive=ledger_app)
    assert (done["posted"], done["rejected"]) == (1, 2), done
    assert done["rejected_by_reason"] == {"points_limit_exceeded": 2}
    page = await client.get(
        f"/v1/batches/{batch['id']}/rejections", params={"reason": "points_limit_exceeded"}
    )
    assert page.status_code == 200, page.text
    assert [(x["line"], x["reason"]) for x in page.json()["data"]] == [
        (3, "points_limit_exceeded"),
        (4, "points_limit_exceeded"),
    ]
    assert (await member(client, program, "bat"))["balance"] == 500


@pytest.mark.parametrize("path", ["report", "liability", "liability/aging", "cohorts"])
async def test_no_stored_value_makes_a_report_fail(client: httpx.AsyncClient, ledger_app, path: str) -> None:
    """Two earns at the 64-bit edge, as stored before the limit existed (written here through SQL: the
    API no longer takes them), sum past bigint; every report still answers."""
    program = await create_program(client)
    await earn(client, program, "big1", 10)
    await earn(client, program, "big2", 10)
    async with ledger_app.state.db.driver() as conn, conn.transaction():
        await conn.execute(
            """UPDATE ledger.transactions SET points = $2
                   WHERE program_id = (SELECT id FROM ledger.programs WHERE code = $1);
                UPDATE ledger.postings po SET amount = CASE WHEN po.amount > 0 THEN $2 ELSE -$2 END
                   FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
                   WHERE po.account_id = a.id AND p.code = $1 AND a.kind IN ('member', 'issuance');
                UPDATE ledger.accounts a SET balance = CASE a.kind WHEN 'member' THEN $2 ELSE -$2 END
                   FROM ledger.programs p WHERE p.id = a.program_id AND p.code = $1
                   AND a.kind IN ('member', 'issuance');
                UPDATE ledger.lots SET points = $2, remaining = $2
                   WHERE program_id = (SELECT id FROM ledger.programs WHERE code = $1)""".replace(
                "$1", f"'{program}'"
            ).replace("$2", str(MAX))
        )
    r = await client.get(f"/v1/programs/{program}/{path}")
    assert r.status_code == 200, r.text
    if path == "report":
        assert r.json()["issued"] == 2 * MAX and r.json()["outstanding"] == 2 * MAX
