"""One earn: the same purchases through a card-issuer file and through the API, one at a time, into
two programs configured alike, leave the same points, lots, tier buckets, tiers and balances.

Both go through ledger.post_earns; this holds them to it (caps per day and month, a member whose
balance is negative, lots expiring from occurred_at, tiers crossing thresholds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import create_program, fetch_value, new_key
from tests.ledger.test_batches import HEADER, upload, wait_done

MEMBERS = ["ann", "ben", "neg"]
RULES = {
    "effective_from": "2020-01-01T00:00:00Z",
    "base": {"points": 1, "per_amount_minor": 100},
    "rules": [{"name": "air 10x", "match": {"mcc": "4511"}, "multiplier": "10"}],
    "caps": {"per_member_per_day": 3000, "per_member_per_month": 8000},
}
PROGRAM = {
    "expiry": {"policy": "rolling", "months": 12},
    "allow_negative": True,
    "tiers": [{"code": "silver", "min_points": 1500}, {"code": "gold", "min_points": 6000}],
}

purchases = st.lists(
    st.tuples(
        st.sampled_from(MEMBERS),
        st.integers(min_value=1, max_value=60_000),  # amount_minor (50 fen: 0 points)
        st.sampled_from(["5814", "4511", "5411"]),
        st.integers(min_value=1, max_value=24 * 45),  # hours before now
    ),
    min_size=1,
    max_size=25,
)


async def _program(client: httpx.AsyncClient) -> str:
    code = await create_program(client, **PROGRAM)
    r = await client.post(f"/v1/programs/{code}/rules", json=RULES)
    assert r.status_code == 201, r.text
    # A member in debt before the purchases: their first points repay it, the rest gets lots.
    r = await client.post(
        "/v1/burn",
        json={"program": code, "member_ref": "neg", "points": 700, "reference": "debt"},
        headers={"Idempotency-Key": new_key()},
    )
    assert r.status_code == 201, r.text
    return code


_STATE = """
SELECT a.member_ref, a.balance, a.held, a.lifetime_earned, a.tier,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(t.points, t.kind, t.occurred_at, t.reference)
                                  ORDER BY t.occurred_at, t.reference), '[]')
        FROM ledger.transactions t WHERE t.account_id = a.id AND t.type = 'earn')::text AS earns,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(l.points, l.remaining, l.expires_at, t.reference)
                                  ORDER BY l.expires_at, t.reference, l.points), '[]')
        FROM ledger.lots l LEFT JOIN ledger.transactions t ON t.id = l.txn_id
        WHERE l.account_id = a.id)::text AS lots,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(b.month, b.points) ORDER BY b.month), '[]')
        FROM ledger.tier_buckets b WHERE b.account_id = a.id)::text AS buckets,
       (SELECT coalesce(sum(p.amount), 0) FROM ledger.postings p WHERE p.account_id = a.id) AS posted
FROM ledger.accounts a JOIN ledger.programs g ON g.id = a.program_id
WHERE g.code = $1 AND a.kind = 'member' ORDER BY a.member_ref
"""


async def _state(app: Any, program: str) -> list[dict[str, Any]]:
    async with app.state.db.driver() as conn:
        rows = await conn.fetch(_STATE, program)
    return [dict(r) for r in rows]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=purchases)
async def test_a_file_and_the_api_earn_alike(client: httpx.AsyncClient, ledger_app: Any, rows) -> None:
    via_api, via_file = await _program(client), await _program(client)
    now = datetime.now(UTC).replace(microsecond=0)
    # Time order, as a card issuer's file is; a tie keeps the file's order (its reference).
    # External ids are unique per API key: prefixed by the program, new in every example.
    timed = sorted(
        ((now - timedelta(hours=h), n, m, amount, mcc) for n, (m, amount, mcc, h) in enumerate(rows)),
        key=lambda r: (r[0], r[1]),
    )
    lines = [HEADER]
    for at, n, m, amount, mcc in timed:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{via_file}-{n:04d},earn,,{via_file},,{m},{amount},CNY,M1,{mcc},pos,{stamp},")
        r = await client.post(
            "/v1/earn",
            json={
                "program": via_api,
                "member_ref": m,
                "purchase": {"amount_minor": amount, "currency": "CNY", "merchant_id": "M1", "mcc": mcc},
                "reference": f"{via_file}-{n:04d}",  # the file's reference is its external_id
                "occurred_at": stamp,
            },
            headers={"Idempotency-Key": new_key()},
        )
        assert r.status_code == 201, r.text
    r = await upload(client, ("\n".join(lines) + "\n").encode())
    assert r.status_code in (201, 202), r.text
    done = await wait_done(client, r.json()["id"], drive=ledger_app)
    assert done["status"] == "completed" and done["rejected"] == 0, done

    api, batch = await _state(ledger_app, via_api), await _state(ledger_app, via_file)
    assert api == batch
    for m in api:
        assert m["posted"] == m["balance"]  # the postings back the balance
    assert sum(m["lifetime_earned"] for m in api) == done["points_posted"]


async def _rule_set(app: Any, program: str) -> int:
    rule_set: int = await fetch_value(
        app,
        "SELECT r.id FROM ledger.rule_sets r JOIN ledger.programs p ON p.id = r.program_id WHERE p.code = $1",
        program,
    )
    return rule_set


def _capped_requests(program: str, rule_set: int, key_id: int) -> list[dict[str, Any]]:
    """Earns priced under caps of 3,000 a day and 8,000 a month, as the API hands them to the SQL."""
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day = (this_month - timedelta(days=1)).replace(day=1)  # the 1st of last month: three past days, one month
    plan = [("ann", 2_500, 0), ("ann", 1_000, 0), ("ben", 4_000, 0), ("ann", 2_900, 1), ("ann", 2_900, 2),
            ("ann", 100, 2), ("ben", 10, 1)]  # fmt: skip
    requests = []
    for n, (m, points, d) in enumerate(plan):
        at = day + timedelta(days=d, hours=n)
        args = {"program": program, "member_ref": m, "reference": f"c{n}", "points": points,
                "occurred_at": at.isoformat(), "rule_set_id": rule_set, "caps": RULES["caps"],
                "breakdown": {"points": points, "caps_applied": []}}  # fmt: skip
        requests.append({"k": key_id, "key": new_key(), "h": f"{n:02x}", "op": "earn", "a": args, "p": None,
                         "s": ["ledger:admin"]})  # fmt: skip
    return requests


async def test_capped_earns_in_one_batch_match_one_at_a_time(
    client: httpx.AsyncClient, ledger_app: Any
) -> None:
    one, batched = await _program(client), await _program(client)
    db = ledger_app.state.db
    async with db.driver() as conn:
        key_id = await conn.fetchval("SELECT id FROM auth.api_keys ORDER BY id LIMIT 1")
        singles = []
        for req in _capped_requests(one, await _rule_set(ledger_app, one), key_id):
            row = await conn.fetchrow(
                "SELECT status, body::text AS body FROM ledger.execute($1, $2, decode($3, 'hex'), 'earn',"
                " $4::jsonb, NULL, ARRAY['ledger:admin'])",
                req["k"], req["key"], req["h"], orjson.dumps(req["a"]).decode(),
            )  # fmt: skip
            singles.append((row["status"], orjson.loads(row["body"])))
        rows = await conn.fetch(
            "SELECT i, status, body FROM ledger.execute_batch($1::jsonb) ORDER BY i",
            orjson.dumps(_capped_requests(batched, await _rule_set(ledger_app, batched), key_id)).decode(),
        )
    together = [(r["status"], orjson.loads(r["body"])) for r in rows]

    def shape(answer: tuple[int, dict[str, Any]]) -> Any:
        status, body = answer
        return status, body["points"], body["breakdown"], body["balance_after"]

    assert [shape(a) for a in together] == [shape(a) for a in singles]
    # The caps bit: 3,500 asked on day 0 for ann, 1,000 cut; the month stops her at 8,000 in all.
    assert [a[1]["points"] for a in singles] == [2_500, 500, 3_000, 2_900, 2_100, 0, 10]
    assert await _state(ledger_app, one) == await _state(ledger_app, batched)
