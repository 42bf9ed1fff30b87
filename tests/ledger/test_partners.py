"""Partners (DESIGN §8): postings on partner accounts, refusals, partner-bound keys."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from ledger_service.partners.service import standings
from services.auth import create_api_key
from tests.conftest import assert_problem, create_program, earn, move, post, put_rules
from tests.ledger.invariants import check_ledger_invariants
from tests.ledger.partners_helpers import create_partner, fund, partner_with_terms, put_terms
from tests.ledger.test_batches import upload, wait_done


async def _account_balance(app: Any, program: str, name: str) -> int:
    async with app.state.db.driver() as conn:
        value = await conn.fetchval(
            """SELECT coalesce(sum(po.amount), 0) FROM ledger.postings po
               JOIN ledger.accounts a ON a.id = po.account_id JOIN ledger.programs g ON g.id = a.program_id
               WHERE g.code = $1 AND a.member_ref = $2""",
            program,
            name,
        )
    return int(value)


async def test_earn_and_burn_post_against_the_partners_accounts(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    partner = await partner_with_terms(client, program)
    await earn(client, program, "m1", 500, partner=partner)
    await move(client, "burn", program, "m1", 120, partner=partner)
    assert await _account_balance(ledger_app, program, f"partner:{partner}:issued") == -500
    assert await _account_balance(ledger_app, program, f"partner:{partner}:accepted") == 120
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_refusals_suspended_role_terms_and_unknown(client: httpx.AsyncClient, program: str) -> None:
    issuer = await partner_with_terms(client, program, roles=["issuer"])
    bare = await create_partner(client, ["issuer", "acceptor"])  # no terms for the program
    body = {"program": program, "member_ref": "r1", "points": 10, "reference": "x"}
    assert_problem(await post(client, "/v1/earn", {**body, "partner": "NOSUCH"}), 404, "partner_not_found")
    assert_problem(await post(client, "/v1/earn", {**body, "partner": bare}), 422, "partner_terms_missing")
    await earn(client, program, "r1", 100, partner=issuer)
    assert_problem(await post(client, "/v1/burn", {**body, "partner": issuer}), 422, "partner_role_missing")
    r = await client.patch(f"/v1/partners/{issuer}", json={"status": "suspended"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert_problem(await post(client, "/v1/earn", {**body, "partner": issuer}), 422, "partner_suspended")
    await client.patch(f"/v1/partners/{issuer}", json={"status": "active"})
    await earn(client, program, "r1", 10, partner=issuer)
    both = {**body, "partner": issuer, "clearing": "merchant"}
    assert_problem(await post(client, "/v1/earn", both), 422, "validation_error")


async def test_reversals_follow_their_originals_accounts(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    partner = await partner_with_terms(client, program)
    e = await earn(client, program, "v1", 300, partner=partner)
    b = await move(client, "burn", program, "v1", 100, partner=partner)
    r1 = await post(client, f"/v1/transactions/{e['id']}/reverse", {"points": 50, "reason": "returned"})
    r2 = await post(client, f"/v1/transactions/{b['id']}/reverse", {"points": 40, "reason": "refund"})
    assert r1.status_code == 201 and r2.status_code == 201
    assert await _account_balance(ledger_app, program, f"partner:{partner}:issued") == -250
    assert await _account_balance(ledger_app, program, f"partner:{partner}:accepted") == 60
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_holds_are_captured_at_their_partner(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    partner = await partner_with_terms(client, program)
    await earn(client, program, "h1", 300)
    r = await post(
        client,
        "/v1/holds",
        {"program": program, "member_ref": "h1", "points": 90, "reference": "c", "partner": partner},
    )
    assert r.status_code == 201, r.text
    c = await post(client, f"/v1/holds/{r.json()['id']}/capture", {"points": 80})
    assert c.status_code == 201, c.text
    assert await _account_balance(ledger_app, program, f"partner:{partner}:accepted") == 80


async def test_a_partner_bound_key_acts_only_as_its_partner(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    mine = await partner_with_terms(client, program)
    other = await partner_with_terms(client, program)
    _, secret = await create_api_key(
        ledger_app.state.db,
        name="bank pos",
        scopes=["ledger:earn", "ledger:burn", "ledger:read"],
        partner=mine,
    )
    body = {"program": program, "member_ref": "k1", "points": 100, "reference": "x"}
    assert_problem(
        await post(client, "/v1/earn", {**body, "partner": other}, auth=secret), 403, "partner_forbidden"
    )
    assert_problem(
        await post(client, "/v1/burn", {**body, "partner": other}, auth=secret), 403, "partner_forbidden"
    )
    r = await post(client, "/v1/earn", body, auth=secret)  # no partner named: the key's own
    assert r.status_code == 201, r.text
    assert await _account_balance(ledger_app, program, f"partner:{mine}:issued") == -100
    # Another partner's hold or transaction is not the key's to capture or reverse.
    h = await post(client, "/v1/holds", {**body, "points": 10, "partner": other})
    assert_problem(
        await post(client, f"/v1/holds/{h.json()['id']}/capture", {}, auth=secret), 403, "partner_forbidden"
    )
    e = await earn(client, program, "k1", 20, partner=other)
    rev = await post(client, f"/v1/transactions/{e['id']}/reverse", {"reason": "x"}, auth=secret)
    assert_problem(rev, 403, "partner_forbidden")
    r = await client.get(f"/v1/partners/{other}/position", headers={"Authorization": f"Bearer {secret}"})
    assert_problem(r, 403, "partner_forbidden")
    assert (
        await client.get(f"/v1/partners/{mine}/position", headers={"Authorization": f"Bearer {secret}"})
    ).status_code == 200


async def test_hundred_concurrent_earns_against_funds_for_forty(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    """Coalesced into shared database transactions, 100 earns of 10 against 400 prepaid points: exactly
    40 succeed, and the 20 plain earns among them are never failed by their refused neighbours."""
    partner = await partner_with_terms(client, program, funding="prepaid")
    await fund(client, partner, program, 400, 320)
    at_partner = {"program": program, "points": 10, "reference": "p", "partner": partner}
    plain = {"program": program, "points": 5, "reference": "q"}
    tasks = [post(client, "/v1/earn", {**at_partner, "member_ref": f"c{i % 7}"}) for i in range(100)]
    tasks += [post(client, "/v1/earn", {**plain, "member_ref": f"c{i % 7}"}) for i in range(20)]
    responses = await asyncio.gather(*tasks)
    partnered, plain_ones = responses[:100], responses[100:]
    assert sorted(r.status_code for r in partnered) == [201] * 40 + [422] * 60
    for r in partnered:
        if r.status_code == 422:
            assert_problem(r, 422, "partner_funds_exhausted")
    assert all(r.status_code == 201 for r in plain_ones), [r.text for r in plain_ones if r.status_code != 201]
    assert await _account_balance(ledger_app, program, f"partner:{partner}:issued") == -400
    position = (await client.get(f"/v1/partners/{partner}/position")).json()
    (row,) = position["programs"]
    assert (row["funded_points"], row["issued_points"], row["prepaid_points"]) == (400, 400, 0)
    await check_ledger_invariants(ledger_app.state.db, program)
    # A clawback gives its points back to the partner's funds.
    first = next(r.json() for r in partnered if r.status_code == 201)
    assert (await post(client, f"/v1/transactions/{first['id']}/reverse", {"reason": "r"})).status_code == 201
    await earn(client, program, "c1", 10, partner=partner)
    assert_problem(
        await post(client, "/v1/earn", {**at_partner, "member_ref": "c1"}), 422, "partner_funds_exhausted"
    )


async def test_unchecked_partner_earns_count_on_slots_and_a_later_credit_limit_sees_them(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    """A postpaid partner without a credit limit is counted on per-connection slots (no queue on its
    row): 120 concurrent earns of 100 points are all in its position, and when terms with a credit
    limit take over, the check counts them (80 fen per 100 points: 96.00 CNY used of 100.00)."""
    partner = await partner_with_terms(
        client, program, effective_from=(datetime.now(UTC) - timedelta(days=1)).isoformat()
    )
    body = {"program": program, "points": 100, "reference": "s", "partner": partner}
    responses = await asyncio.gather(
        *(post(client, "/v1/earn", {**body, "member_ref": f"s{i % 30}"}) for i in range(120))
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    async with ledger_app.state.db.driver() as conn:
        slots = await conn.fetch(
            """SELECT s.slot, s.issued_points FROM ledger.partner_slots s
               JOIN ledger.partners p ON p.id = s.partner_id WHERE p.code = $1""",
            partner,
        )
    assert sum(r["issued_points"] for r in slots) == 12_000
    (row,) = (await client.get(f"/v1/partners/{partner}/position")).json()["programs"]
    assert (row["issued_points"], row["credit_used_minor"]) == (12_000, 9_600)
    assert await _account_balance(ledger_app, program, f"partner:{partner}:issued") == -12_000

    await put_terms(
        client, partner, program, credit_limit_minor=10_000, effective_from=datetime.now(UTC).isoformat()
    )
    await earn(client, program, "s1", 500, partner=partner)  # 4.00 CNY: 100.00 used
    one_more = {**body, "member_ref": "s2", "points": 1}
    assert_problem(await post(client, "/v1/earn", one_more), 422, "partner_credit_exceeded")
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_concurrent_earns_take_slot_rooms_and_never_pass_the_credit_limit(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    """A 100.00 CNY credit limit at 80 fen per 100 points: after one exact earn has shared what is left
    over the slots, 600 concurrent earns of 25 points (20 fen each) in coalesced batches: exactly 499
    more fit, however the batches fall on slots, and some were taken from a slot's room."""
    partner = await partner_with_terms(client, program, credit_limit_minor=10_000)
    await earn(client, program, "r0", 25, partner=partner)  # the exact path allots the rooms
    body = {"program": program, "points": 25, "reference": "r", "partner": partner}
    responses = await asyncio.gather(
        *(post(client, "/v1/earn", {**body, "member_ref": f"r{i % 97}"}) for i in range(600))
    )
    assert sorted(r.status_code for r in responses) == [201] * 499 + [422] * 101
    assert all(r.json()["code"] == "partner_credit_exceeded" for r in responses if r.status_code == 422)
    (row,) = (await client.get(f"/v1/partners/{partner}/position")).json()["programs"]
    assert (row["issued_points"], row["credit_used_minor"]) == (12_500, 10_000)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_a_coalesced_batch_takes_from_its_slots_room_or_goes_one_by_one(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    """Credit limit 100.00 CNY: one exact earn shares half of the 99.20 left over 64 slots (77 fen
    each). A batch with an earn of 75 points (60 fen) comes out of the connection's slot alone; a batch
    of 32 does not fit the slot and fails as a whole (JF001), for the caller to retry one by one."""
    partner = await partner_with_terms(client, program, credit_limit_minor=10_000)
    await earn(client, program, "b0", 100, partner=partner)

    def batch(n: int, tag: str) -> str:
        a = {"program": program, "points": 75, "reference": "b", "partner": partner}
        return json.dumps([
            {"k": key_id, "key": f"{tag}-{i}", "h": "00", "op": "earn", "a": {**a, "member_ref": f"b{i}"},
             "p": None, "s": ["ledger:write"]}
            for i in range(n)
        ])  # fmt: skip

    slot_sql = """SELECT s.issued_points, s.room_cash FROM ledger.partner_slots s JOIN ledger.partners p
                  ON p.id = s.partner_id WHERE p.code = $1 AND s.slot = ledger.partner_slot()"""
    async with ledger_app.state.db.driver() as conn:
        key_id = await conn.fetchval("SELECT min(id) FROM auth.api_keys")
        assert await conn.fetchrow(slot_sql, partner) == (0, 77)
        rows = await conn.fetch("SELECT status FROM ledger.execute_batch($1::jsonb)", batch(1, "small"))
        assert [r["status"] for r in rows] == [201]
        assert await conn.fetchrow(slot_sql, partner) == (75, 17)
        with pytest.raises(asyncpg.PostgresError) as raised:
            await conn.fetch("SELECT status FROM ledger.execute_batch($1::jsonb)", batch(32, "big"))
        assert raised.value.sqlstate == "JF001"
        assert await conn.fetchrow(slot_sql, partner) == (75, 17)
    (row,) = (await client.get(f"/v1/partners/{partner}/position")).json()["programs"]
    assert (row["issued_points"], row["credit_used_minor"]) == (175, 140)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_postpaid_credit_limit(client: httpx.AsyncClient, program: str) -> None:
    """Issue price 80 fen per 100 points, limit 10.00 CNY: 1,250 points fit, one more does not."""
    partner = await partner_with_terms(client, program, credit_limit_minor=1000)
    await earn(client, program, "l1", 1000, partner=partner)
    await earn(client, program, "l1", 250, partner=partner)
    body = {"program": program, "member_ref": "l1", "points": 1, "reference": "x", "partner": partner}
    assert_problem(await post(client, "/v1/earn", body), 422, "partner_credit_exceeded")
    position = (await client.get(f"/v1/partners/{partner}/position")).json()
    assert position["programs"][0]["credit_used_minor"] == 1000


async def test_a_capped_partner_earn_counts_the_cash_of_the_points_it_got(
    client: httpx.AsyncClient, program: str
) -> None:
    """A rule-priced earn of 2,000 points cut to 1,000 by the day cap: the partner owes 8.00 CNY for
    the 1,000 it funded, and only that counts against its 20.00 CNY credit limit."""
    await put_rules(
        client, program, base={"points": 1, "per_amount_minor": 100}, caps={"per_member_per_day": 1000}
    )
    partner = await partner_with_terms(client, program, credit_limit_minor=2000)
    body = {
        "program": program,
        "member_ref": "cap1",
        "reference": "r",
        "partner": partner,
        "purchase": {"amount_minor": 200000, "currency": "CNY"},
    }
    r = await post(client, "/v1/earn", body)
    assert r.status_code == 201, r.text
    assert r.json()["points"] == 1000
    (row,) = (await client.get(f"/v1/partners/{partner}/position")).json()["programs"]
    assert (row["issued_points"], row["credit_used_minor"]) == (1000, 800)


async def test_a_batch_file_names_partners_and_rejects_beyond_the_funds(
    client: httpx.AsyncClient, program: str, ledger_app: Any
) -> None:
    partner = await partner_with_terms(client, program, funding="prepaid")
    await fund(client, partner, program, 100, 80)
    lines = ["external_id,program,member_ref,points,partner"]
    lines += [f"F-{i},{program},b{i},30,{partner}" for i in range(4)]  # 3 fit, the 4th does not
    lines += [f"F-4,{program},b4,10,{partner}", f"F-5,{program},b5,10,NOSUCH", f"F-6,{program},b6,10,"]
    r = await upload(client, ("\n".join(lines) + "\n").encode())
    assert r.status_code == 202, r.text
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    assert (done["posted"], done["rejected"], done["duplicates"]) == (5, 2, 0), done
    reasons = (await client.get(f"/v1/batches/{done['id']}/rejections")).json()["data"]
    assert sorted(x["reason"] for x in reasons) == ["partner_funds_exhausted", "partner_not_found"]
    assert await _account_balance(ledger_app, program, f"partner:{partner}:issued") == -100
    # The same file again: every row it posted is a duplicate, not a refusal.
    again = await upload(client, ("\n".join(lines) + "\n").encode())
    done = await wait_done(client, again.json()["id"], drive=ledger_app)
    assert (done["posted"], done["duplicates"]) == (0, 5), done
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_standings_show_the_terms_in_force_and_the_counters_as_the_position(
    client: httpx.AsyncClient, program: str, ledger_app: Any, admin_key: str
) -> None:
    """partners.service.standings (the console's list): terms in force now, not a later version; the
    same prepaid points and credit used as GET .../position; only partners at the program named; a
    partner-bound key's own partner."""
    now = datetime.now(UTC)
    bank = await create_partner(client, ["issuer"])
    await put_terms(
        client, bank, program, credit_limit_minor=9000, effective_from=(now - timedelta(days=1)).isoformat()
    )
    await put_terms(
        client, bank, program, credit_limit_minor=1, effective_from=(now + timedelta(days=9)).isoformat()
    )
    air = await create_partner(client, ["issuer"])
    await put_terms(client, air, program, funding="prepaid")
    await fund(client, air, program, 1000, 800)
    await earn(client, program, "s1", 333, partner=bank)
    await earn(client, program, "s2", 250, partner=air)
    elsewhere = await partner_with_terms(client, await create_program(client))

    admin = await ledger_app.state.keys.lookup(admin_key)
    page = await standings(ledger_app.state.db, admin, program=program, limit=50, cursor=None)
    shown = {s.partner.code: s.programs for s in page.data}
    assert set(shown) == {bank, air} and elsewhere not in shown
    for code in (bank, air):
        position = (await client.get(f"/v1/partners/{code}/position")).json()["programs"][0]
        (row,) = shown[code]
        assert (row.program, row.prepaid_points, row.credit_used_minor, row.issued_points) == (
            position["program"],
            position["prepaid_points"],
            position["credit_used_minor"],
            position["issued_points"],
        )
    (bank_row,) = shown[bank]
    assert bank_row.terms is not None and bank_row.terms.version == 1 and bank_row.credit_limit_minor == 9000
    assert bank_row.credit_used_minor == 266 and shown[air][0].prepaid_points == 750

    _, secret = await create_api_key(ledger_app.state.db, name="air", scopes=["ledger:read"], partner=air)
    bound = await ledger_app.state.keys.lookup(secret)
    own = await standings(ledger_app.state.db, bound, program=None, limit=50, cursor=None)
    assert [s.partner.code for s in own.data] == [air]


async def test_a_key_bound_to_an_unknown_partner_is_refused(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    """No key bound to a partner the ledger does not know: it would act for nobody."""
    async with ledger_app.state.db.driver() as conn:
        before = await conn.fetchval("SELECT count(*) FROM auth.api_keys")
    body = {"scopes": ["ledger:earn"], "partner": "NO_SUCH_PARTNER"}
    problem = assert_problem(await client.post("/v1/api-keys", json=body), 422, "partner_not_found")
    assert "NO_SUCH_PARTNER" in problem["detail"]
    async with ledger_app.state.db.driver() as conn:
        assert await conn.fetchval("SELECT count(*) FROM auth.api_keys") == before
    known = await create_partner(client, ["issuer"])
    r = await client.post("/v1/api-keys", json={**body, "partner": known})
    assert r.status_code == 201 and r.json()["partner"] == known


async def test_partner_list_cursors_are_capped_like_every_list(client: httpx.AsyncClient) -> None:
    for path in ("/v1/partners", "/v1/settlements"):
        r = await client.get(path, params={"cursor": "x" * 65})
        assert r.status_code == 422, (path, r.text)
