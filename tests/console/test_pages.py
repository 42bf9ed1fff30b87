"""The partners, settlements and segments pages over HTTP (no browser): who may see what, the CSV
downloads against the API's own, and the segment refresh as an action (CSRF, ledger:admin, events)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ledger_service.console import service as console_service
from services.auth import create_api_key
from tests.conftest import create_program, earn, make_key, move
from tests.console.forms import BASE, hidden, sign_in
from tests.ledger.partners_helpers import create_partner, fund, put_terms


async def partners_world(api: httpx.AsyncClient) -> dict[str, Any]:
    """A program with a postpaid bank (credit limit, a settled day and an open one) and a prepaid
    airline that is also an acceptor, settled up to now."""
    program = await create_program(api)
    now = datetime.now(UTC)
    since = (now - timedelta(days=3)).isoformat()
    bank = await create_partner(api, ["issuer"], name="Bank of tests")
    await put_terms(api, bank, program, credit_limit_minor=500_000, effective_from=since)
    air = await create_partner(api, ["issuer", "acceptor"], name="Test air")
    await put_terms(api, air, program, funding="prepaid", period="weekly", effective_from=since)
    await fund(api, air, program, 5000, 4000)
    await earn(api, program, "p-1", 1000, partner=bank, occurred_at=(now - timedelta(days=2)).isoformat())
    r = await api.post("/v1/settlements", params={"as_of": now.isoformat()})
    assert r.status_code == 201, r.text
    await earn(api, program, "p-1", 333, partner=bank)
    await earn(api, program, "p-2", 700, partner=air)
    await move(api, "burn", program, "p-1", 200, partner=air)
    return {"program": program, "bank": bank, "air": air, "settlement": r.json()["id"]}


async def test_partner_pages_and_csv_match_the_api(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any
) -> None:
    w = await partners_world(client)
    reader = await make_key(ledger_app, ["ledger:read"], programs=[w["program"]])
    auth = {"Authorization": f"Bearer {reader}"}
    await sign_in(console, reader)
    listing = await console.get("/console/partners", params={"program": w["program"]})
    assert listing.status_code == 200
    assert (
        listing.text.count('data-partner="') == 2 and w["bank"] in listing.text and w["air"] in listing.text
    )
    page = await console.get(f"/console/partners/{w['bank']}")
    assert page.status_code == 200 and 'data-test="statements-csv"' in page.text
    assert reader not in page.text and '<form method="post" action="/console/logout"' in page.text
    assert page.text.count('<form method="post"') == 1  # sign-out only: partners have no console action

    csv = await console.get(f"/console/partners/{w['bank']}/statements.csv")
    api_csv = await client.get(f"/v1/partners/{w['bank']}/statements", headers={**auth, "Accept": "text/csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    assert csv.text == api_csv.text and len(csv.text.splitlines()) >= 2  # the header and the settled day

    run = await console.get(f"/console/settlements/{w['settlement']}/lines.csv")
    api_run = await client.get(f"/v1/settlements/{w['settlement']}", headers={**auth, "Accept": "text/csv"})
    assert run.status_code == 200 and run.text == api_run.text
    assert {line.split(",")[1] for line in run.text.splitlines()[1:]} == {w["program"]}  # the key's programs
    assert (await console.get("/console/settlements")).status_code == 200


async def test_a_partner_bound_key_sees_its_partner_only(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any
) -> None:
    w = await partners_world(client)
    _, bound = await create_api_key(
        ledger_app.state.db, name="bank", scopes=["ledger:read"], partner=w["bank"]
    )
    await sign_in(console, bound)
    listing = await console.get("/console/partners", params={"program": w["program"]})
    assert w["bank"] in listing.text and w["air"] not in listing.text
    for path in (f"/console/partners/{w['air']}", f"/console/partners/{w['air']}/statements.csv"):
        r = await console.get(path)
        assert r.status_code == 403, path
        assert "text/html" in r.headers["content-type"]


async def _segment_world(client: httpx.AsyncClient) -> str:
    program = await create_program(client)
    for i, points in enumerate((100, 600, 900)):
        await earn(client, program, f"g-{i}", points)
    assert (await client.post("/v1/jobs/profiles", params={"program": program})).status_code == 200
    criteria = {"all": [{"field": "lifetime_earned", "op": "gte", "value": 500}]}
    r = await client.post(
        f"/v1/programs/{program}/segments", json={"code": "big", "name": "Big earners", "criteria": criteria}
    )
    assert r.status_code == 201, r.text
    return program


async def test_segments_read_only_sees_sizes_not_members_nor_actions(
    console: httpx.AsyncClient, client: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await _segment_world(client)
    reader = await make_key(ledger_app, ["ledger:read"], programs=[program])
    await sign_in(console, reader)
    listing = await console.get("/console/segments", params={"program": program})
    assert listing.status_code == 200 and 'data-segment="big"' in listing.text
    page = await console.get(f"/console/programs/{program}/segments/big")
    assert page.status_code == 200 and 'data-test="members-hidden"' in page.text
    assert "g-1" not in page.text and "/refresh" not in page.text and "members.csv" not in page.text
    export = await console.get(f"/console/programs/{program}/segments/big/members.csv")
    assert export.status_code == 403 and "g-1" not in export.text
    refresh = await console.post(
        f"/console/programs/{program}/segments/big/refresh",
        data={"csrf": hidden(page.text, "csrf")},
        headers={"Origin": BASE},
    )
    assert refresh.status_code == 403 and "ledger:admin" in refresh.text
    other = await create_program(client)
    assert (await console.get("/console/segments", params={"program": other})).status_code == 403
    assert (await console.get(f"/console/programs/{other}/segments/big")).status_code == 403


async def test_segment_refresh_and_export_as_the_api(
    console: httpx.AsyncClient,
    client: httpx.AsyncClient,
    ledger_app: Any,
    admin_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    program = await _segment_world(client)
    await sign_in(console, admin_key)
    monkeypatch.setattr(console_service, "SEGMENT_MEMBERS", 1)  # a page of one: g-1, then g-2
    first = await console.get(f"/console/programs/{program}/segments/big")
    assert 'data-member="g-1"' in first.text and 'data-member="g-2"' not in first.text
    more = re.search(r'href="([^"]+)" data-test="next-members"', first.text)
    assert more is not None
    second = await console.get(html.unescape(more.group(1)))
    assert 'data-member="g-2"' in second.text and 'data-member="g-1"' not in second.text
    assert 'data-test="next-members"' not in second.text
    monkeypatch.undo()
    page = await console.get(f"/console/programs/{program}/segments/big")
    assert 'data-member="g-1"' in page.text and 'data-member="g-2"' in page.text
    export = await console.get(f"/console/programs/{program}/segments/big/members.csv")
    api_export = await client.get(
        f"/v1/programs/{program}/segments/big/members", headers={"Accept": "text/csv"}
    )
    assert export.status_code == 200 and export.text == api_export.text
    assert [line.split(",")[0] for line in export.text.splitlines()[1:]] == ["g-1", "g-2"]

    await earn(client, program, "g-0", 450)  # crosses 500: enters on the next refresh
    path = f"/console/programs/{program}/segments/big/refresh"
    assert (await console.post(path, data={}, headers={"Origin": BASE})).status_code == 403  # no CSRF token
    cross = await console.post(
        path, data={"csrf": hidden(page.text, "csrf")}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    r = await console.post(path, data={"csrf": hidden(page.text, "csrf")}, headers={"Origin": BASE})
    assert r.status_code == 303 and r.headers["location"].endswith("notice=refreshed-3-1-0")
    again = await console.post(path, data={"csrf": hidden(page.text, "csrf")}, headers={"Origin": BASE})
    assert again.headers["location"].endswith("notice=refreshed-3-0-0")  # nobody moves twice
    # the program's own feed: the two who entered when it was created, then the one the console moved
    reader = {"Authorization": f"Bearer {await make_key(ledger_app, ['ledger:read'], programs=[program])}"}
    feed = (
        await client.get("/v1/events", params={"type": ["segment.entered", "segment.left"]}, headers=reader)
    ).json()["data"]
    moved = [(e["type"], e["data"]["member_ref"]) for e in feed]
    assert moved == [("segment.entered", "g-1"), ("segment.entered", "g-2"), ("segment.entered", "g-0")]
    api = (await client.get(f"/v1/programs/{program}/segments/big")).json()
    assert api["member_count"] == 3
