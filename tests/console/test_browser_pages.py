"""The partners, settlement, segments and member profile pages in a real browser (Debian's chromium via
Playwright) against the ledger as a process: each figure shown is the API's for the same data, a
read-only key sees no action, no request leaves localhost and the page logs no error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.async_api import expect

from services.auth import KEY_PREFIX, SCOPES
from tests.browser import screenshots, watching
from tests.conftest import create_program, earn, make_key, move
from tests.console.conftest import Stack
from tests.console.forms import browser_sign_in as sign_in
from tests.console.forms import number
from tests.console.test_pages import partners_world

KEY_PATTERN = re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{20,}"  # what any API key looks like
POSTS = "form[method=post]:not([action='/console/logout'])"  # any form that would change something


PROFILE_FIGURES = (
    *(
        f"{figure}_{days}d"
        for figure in ("earned_points", "earn_count", "redeemed_points")
        for days in (30, 90, 365)
    ),
    "lifetime_earned",
    "lifetime_redeemed",
    "lifetime_expired",
    "expiring_points_30d",
    "expiring_points_90d",
)


def _cash(minor: int, currency: str = "CNY") -> str:
    return f"{minor // 100:,}.{minor % 100:02d} {currency}"


async def _json(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await api.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_partners_position_statements_and_settlement(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any
) -> None:
    w = await partners_world(api)
    program, bank, air = w["program"], w["bank"], w["air"]
    key = await make_key(ledger_app, list(SCOPES), programs=[program])
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, key)
        await page.click("nav a[href='/console/partners']")
        await page.click(f"p.filters a[href='/console/partners?program={program}']")
        await expect(page.locator("tr[data-partner]")).to_have_count(2)
        for code in (bank, air):
            position = (await _json(api, f"/v1/partners/{code}/position"))["programs"][0]
            row = page.locator(f"tr[data-partner='{code}'][data-program='{program}']")
            await expect(row.locator("[data-field=issued_points]")).to_have_text(
                f"{position['issued_points']:,}"
            )
            prepaid = "—" if position["prepaid_points"] is None else f"{position['prepaid_points']:,}"
            await expect(row.locator("[data-field=prepaid_points]")).to_have_text(prepaid)
            await expect(row.locator("[data-field=credit_used]")).to_have_text(
                _cash(position["credit_used_minor"])
            )
        await expect(page.locator(f"tr[data-partner='{air}'] [data-field=prepaid_points]")).to_have_text(
            "4,300"
        )  # 5,000 bought, 700 issued
        await screenshots(page, "partners")

        await page.click(f"tr[data-partner='{bank}'] a[href='/console/partners/{bank}']")
        await expect(page.locator("h1")).to_contain_text(bank)
        position = (await _json(api, f"/v1/partners/{bank}/position"))["programs"][0]
        card = page.locator(f"section[data-position='{program}']")
        await expect(card.locator("[data-field=credit_used]")).to_have_text(
            f"{_cash(position['credit_used_minor'])} of {_cash(500_000)}"
        )
        open_rows = card.locator("table.open-periods tbody tr")
        await expect(open_rows).to_have_count(len(position["open_periods"]))
        shown = [number(t) for t in await open_rows.locator("[data-field=points_issued]").all_text_contents()]
        assert shown == [p["points_issued"] for p in position["open_periods"]] == [333]
        statements = (await _json(api, f"/v1/partners/{bank}/statements"))["data"]
        lines = page.locator("table.statements tbody tr")
        await expect(lines).to_have_count(len(statements))
        for line in statements:
            row = page.locator(f"table.statements tr[data-line='{line['id']}']")
            await expect(row.locator("[data-field=points_issued]")).to_have_text(f"{line['points_issued']:,}")
            await expect(row.locator("[data-field=net]")).to_have_text(_cash(line["net_minor"]))
        assert [s["points_issued"] for s in statements if s["points_issued"]] == [1000]
        async with page.expect_download() as download:
            await page.click("[data-test=statements-csv]")
        saved = await (await download.value).path()
        api_csv = await api.get(f"/v1/partners/{bank}/statements", headers={"Accept": "text/csv"})
        assert saved is not None and saved.read_bytes().decode() == api_csv.text
        await screenshots(page, "partner")

        settled = next(s for s in statements if s["points_issued"])
        await page.click(f"tr[data-line='{settled['id']}'] [data-test=settlement]")
        await expect(page).to_have_url(f"{stack.ledger.url}/console/settlements/{settled['settlement_id']}")
        run = await _json(api, f"/v1/settlements/{settled['settlement_id']}")
        await expect(page.locator("table.lines tbody tr")).to_have_count(len(run["lines"]))
        row = page.locator(f"table.lines tr[data-line='{settled['id']}']")
        await expect(row.locator("[data-field=due_from]")).to_have_text(
            _cash(settled["cash_due_from_partner_minor"])
        )
        await screenshots(page, "settlement")
        await page.click("a[href='/console/settlements']")
        await expect(page.locator(f"tr[data-settlement='{settled['settlement_id']}']")).to_have_count(1)
        await screenshots(page, "settlements")
        assert key not in await page.content()


async def _segmented(api: httpx.AsyncClient) -> str:
    program = await create_program(api)
    for i in range(7):  # 150, 250, ... 750 points: g-4, g-5 and g-6 reach 500
        await earn(api, program, f"g-{i}", 100 * i + 150)
    assert (await api.post("/v1/jobs/profiles", params={"program": program})).status_code == 200
    criteria = {"all": [{"field": "lifetime_earned", "op": "gte", "value": 500}]}
    everyone = {"all": [{"field": "lifetime_earned", "op": "gte", "value": 0}]}
    for code, name in (("big", "Big earners"), ("all", "Everyone")):
        body = {"code": code, "name": name, "criteria": criteria if code == "big" else everyone}
        r = await api.post(f"/v1/programs/{program}/segments", json=body)
        assert r.status_code == 201, r.text
    return program


async def test_segments_sizes_members_and_refresh(
    browser: Any, stack: Stack, api: httpx.AsyncClient, console_admin_key: str
) -> None:
    program = await _segmented(api)
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, console_admin_key)
        await page.goto(f"{stack.ledger.url}/console/segments?program={program}")
        listed = (await _json(api, f"/v1/programs/{program}/segments"))["data"]
        for seg in listed:
            row = page.locator(f"tr[data-segment='{seg['code']}']")
            await expect(row.locator("[data-field=member_count]")).to_have_text(str(seg["member_count"]))
        assert [s["member_count"] for s in listed] == [3, 7]
        await screenshots(page, "segments")

        await page.click("tr[data-segment='big'] a")
        members = (await _json(api, f"/v1/programs/{program}/segments/big/members"))["data"]
        shown = await page.locator("table.members tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.member)"
        )
        assert shown == [m["member_ref"] for m in members] == ["g-4", "g-5", "g-6"]
        await earn(api, program, "g-0", 400)  # 550: enters on the next refresh
        await page.click("[data-test=refresh]")
        await expect(page.locator("[data-test=notice]")).to_have_text(
            "Refreshed: 4 members (1 entered, 0 left)."
        )
        segment = await _json(api, f"/v1/programs/{program}/segments/big")
        await expect(page.locator("dd[data-field=member_count]")).to_have_text(str(segment["member_count"]))
        assert segment["member_count"] == 4
        await expect(page.locator("tr[data-member='g-0']")).to_have_count(1)
        async with page.expect_download() as download:
            await page.click("[data-test=export]")
        saved = await (await download.value).path()
        api_csv = await api.get(
            f"/v1/programs/{program}/segments/big/members", headers={"Accept": "text/csv"}
        )
        assert saved is not None and saved.read_bytes().decode() == api_csv.text
        await screenshots(page, "segment")


async def test_member_profile_matches_the_api(
    browser: Any, stack: Stack, api: httpx.AsyncClient, console_admin_key: str
) -> None:
    program = await create_program(api)
    now = datetime.now(UTC)
    for days, points, mcc, channel in (
        (200, 400, "5812", "pos"),
        (40, 300, "5411", "app"),
        (3, 250, "5411", "app"),
    ):
        purchase = {"amount_minor": 100, "currency": "CNY", "mcc": mcc, "channel": channel}
        await earn(
            api,
            program,
            "pf-1",
            points,
            purchase=purchase,
            occurred_at=(now - timedelta(days=days)).isoformat(),
        )
    await move(api, "burn", program, "pf-1", 120)
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, console_admin_key)
        await page.goto(f"{stack.ledger.url}/console/programs/{program}/members/pf-1")
        profile = await _json(api, f"/v1/programs/{program}/members/pf-1/profile")
        card = page.locator("#profile")
        for field in PROFILE_FIGURES:
            await expect(card.locator(f"[data-field={field}]")).to_have_text(f"{profile[field]:,}")
        assert (profile["earned_points_30d"], profile["earned_points_365d"], profile["earn_count_90d"]) == (
            250,
            950,
            2,
        )
        await expect(card.locator("[data-field=top_mcc]")).to_have_text(", ".join(profile["top_mcc"]))
        assert profile["top_mcc"][0] == "5411"
        await expect(card.locator("[data-field=channels]")).to_have_text(", ".join(profile["channels"]))
        tags = await card.locator("[data-field=tags] .tag").all_text_contents()
        assert tags == profile["tags"] and "active" in tags  # an earn within 90 days
        await screenshots(page, "member-profile")


async def test_read_only_key_sees_no_action_on_the_new_pages(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any
) -> None:
    w = await partners_world(api)
    program = await _segmented(api)
    reader = await make_key(ledger_app, ["ledger:read"], programs=[program, w["program"]])
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, reader)
        for path in (
            f"/console/partners?program={w['program']}",
            f"/console/partners/{w['bank']}",
            f"/console/settlements/{w['settlement']}",
            "/console/settlements",
            f"/console/segments?program={program}",
            f"/console/programs/{program}/segments/big",
            f"/console/programs/{program}/members/g-4",
        ):
            await page.goto(f"{stack.ledger.url}{path}")
            await expect(page.locator("h1")).to_be_visible()
            await expect(page.locator(POSTS)).to_have_count(0)
            await expect(page.locator("[data-test=export], [data-test=refresh]")).to_have_count(0)
            html = await page.content()
            assert reader not in html and not re.search(KEY_PATTERN, html), path
        await expect(page.locator("#profile [data-field=lifetime_earned]")).to_have_text("550")
        await page.goto(f"{stack.ledger.url}/console/programs/{program}/segments/big")
        await expect(page.locator("[data-test=members-hidden]")).to_have_count(1)
        await expect(page.locator("dd[data-field=member_count]")).to_have_text("3")
        await screenshots(page, "segment-read-only")
