"""The console in a real browser (Debian's chromium via Playwright), against the services running as
processes: sign in, the overview's chart against the API's report, a member, a batch followed to
completion, a reversal, a read-only key refused, a cross-site form refused, sign-out; and each
service's /docs. Each test's page must make no request outside localhost and log no error."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from ledger_service.batches.processor import BatchProcessor
from services.auth import SCOPES, hash_key
from tests.browser import screenshots, watching
from tests.conftest import create_program, earn, make_key, member, move, new_key
from tests.console.conftest import Stack
from tests.console.forms import browser_sign_in as sign_in
from tests.console.forms import number
from tests.harness import ServiceProcess, free_port

HEADER = (
    "external_id,type,original_external_id,program,card_number,member_ref,amount_minor,currency,merchant_id,"
    "mcc,channel,occurred_at,points"
)
# a refusal a test provokes is logged by the browser as a failed load: expected, not an error
REFUSED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of 40[13]")


@pytest.fixture
async def seeded(api: httpx.AsyncClient) -> str:
    program = await create_program(api, tiers=[{"code": "silver", "min_points": 1000}])
    await earn(api, program, "m-1", 1500)
    await earn(api, program, "m-2", 700)
    await move(api, "burn", program, "m-1", 300)
    return program


async def test_overview_chart_matches_the_report(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any, seeded: str
) -> None:
    key = await make_key(ledger_app, list(SCOPES), programs=[seeded])
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, key)
        row = page.locator(f"tr[data-program='{seeded}']")
        await expect(row.locator("[data-field=outstanding]")).to_have_text("1,900")
        await expect(row.locator("[data-field=members]")).to_have_text("2")
        charts = page.locator(f".charts[data-program='{seeded}']")
        start, end = await charts.get_attribute("data-from"), await charts.get_attribute("data-to")
        roll = (
            await api.get(
                f"/v1/programs/{seeded}/liability", params={"period": "day", "from": start, "to": end}
            )
        ).json()
        report = (
            await api.get(
                f"/v1/programs/{seeded}/report",
                params={"from": f"{start}T00:00:00Z", "to": f"{end}T00:00:00Z"},
            )
        ).json()
        flows = charts.locator("figure[data-chart=flows] svg")
        await expect(flows).to_be_visible()
        drawn = {}
        for i, name in enumerate(("issued", "redeemed", "expired")):
            values = await flows.locator(f"g.serie-{i} desc.value").all_text_contents()
            drawn[name] = [number(v) for v in values]
            assert drawn[name] == [row[name] for row in roll["rows"]]  # day by day, the API's roll-forward
        assert len(drawn["issued"]) == 30
        # and in total, the API's report of the same period (no clawbacks or refunds here)
        assert (
            (sum(drawn["issued"]), sum(drawn["redeemed"]), sum(drawn["expired"]))
            == (
                report["issued"],
                report["redeemed"],
                report["expired"],
            )
            == (2200, 300, 0)
        )
        liability = await charts.locator(
            "figure[data-chart=liability] svg g.serie-0 desc.value"
        ).all_text_contents()
        assert [round(float(v) * 100) for v in liability] == [
            row["closing_cash_minor"] for row in roll["rows"]
        ]
        assert roll["rows"][-1]["closing_cash_minor"] == report["liability_cash_minor"] == 1900
        await screenshots(page, "overview")

        await page.click(f"tr[data-program='{seeded}'] a[href='/console/programs/{seeded}']")
        await expect(page.locator("table.report [data-field=issued]")).to_have_text("2,200")
        await expect(page.locator("[data-test=run-expiry]")).to_have_count(0)  # a key limited to programs
        aging = (await api.get(f"/v1/programs/{seeded}/liability/aging")).json()
        drawn_aging = await page.locator(
            "figure[data-chart=aging] svg g.serie-0 desc.value"
        ).all_text_contents()
        assert [number(v) for v in drawn_aging] == [b["points"] for b in aging["buckets"]]
        assert aging["buckets"][-1] == {"bucket": "never", "points": 1900, "cash_minor": 1900}
        await expect(page.locator("figure[data-chart=cohorts] svg")).to_be_visible()
        monthly = page.locator("table.monthly")
        months = (
            await api.get(
                f"/v1/programs/{seeded}/liability",
                params={
                    "period": "month",
                    "from": await monthly.get_attribute("data-from"),
                    "to": await monthly.get_attribute("data-to"),
                },
            )
        ).json()["rows"]
        await expect(monthly.locator("tbody tr")).to_have_count(len(months))
        for name in ("issued", "redeemed", "closing"):
            shown = [number(v) for v in await monthly.locator(f"[data-field={name}]").all_text_contents()]
            assert shown == [m[name] for m in months]
        assert months[-1]["closing"] == 1900 and len(months) == 12
        await screenshots(page, "program")

        # the page reads both services with a 3 s timeout: on a loaded CI machine one may be slow to
        # answer once, so a page showing a problem is loaded again (twice at most) before failing
        problems: list[str] = []
        for _ in range(3):
            await page.goto(f"{stack.ledger.url}/console/sagas")
            await expect(page.locator("section[data-service=conversion] h2")).to_be_visible()
            problems = await page.locator("[data-test=saga-problem]").all_text_contents()
            if not problems:
                break
        assert problems == [], problems
        await screenshots(page, "sagas")
        hook = await api.post(
            "/v1/webhooks",
            json={"url": "http://user:pw@127.0.0.1:9/hooks/jifen?token=s3cr3t-token", "programs": [seeded]},
        )
        assert hook.status_code == 201, hook.text
        await page.goto(f"{stack.ledger.url}/console/webhooks")
        await expect(page.locator("h1")).to_have_text("Webhook deliveries")
        row = page.locator(f"tr[data-webhook='{hook.json()['id']}']")
        await expect(row.locator("td").first).to_have_text("http://127.0.0.1:9/hooks/jifen")  # no credentials
        html = await page.content()
        assert "s3cr3t-token" not in html and "user:pw" not in html and hook.json()["secret"] not in html
        assert (await api.delete(f"/v1/webhooks/{hook.json()['id']}")).status_code == 200
        await screenshots(page, "webhooks")


async def test_member_lookup_void_and_reverse(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any, seeded: str
) -> None:
    key = await make_key(ledger_app, list(SCOPES), programs=[seeded])
    hold = await api.post(
        "/v1/holds",
        json={"program": seeded, "member_ref": "m-1", "points": 200, "reference": "cart-1"},
        headers={"Idempotency-Key": new_key()},
    )
    assert hold.status_code == 201, hold.text
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, key)
        await page.select_option("form.lookup select[name=program]", seeded)
        await page.fill("form.lookup input[name=member_ref]", "m-1")
        await page.click("form.lookup button[type=submit]")
        await expect(page).to_have_url(f"{stack.ledger.url}/console/programs/{seeded}/members/m-1")
        await expect(page.locator("[data-field=balance]")).to_have_text("1,200")
        await expect(page.locator("[data-field=held]")).to_have_text("200")
        await expect(page.locator("[data-field=tier]")).to_contain_text("silver")
        await expect(page.locator("table.lots tbody tr")).to_have_count(1)  # one earn, partly spent
        await screenshots(page, "member")

        await page.click(f"tr[data-hold='{hold.json()['id']}'] [data-test=void]")
        await expect(page.locator("[data-test=notice]")).to_have_text("Hold voided.")
        await expect(page.locator("[data-field=held]")).to_have_text("0")

        earn_row = page.locator("table.statement tr[data-type=earn]")
        await earn_row.locator("input[name=points]").fill("500")
        await earn_row.locator("input[name=reason]").fill("goodwill correction")
        await earn_row.locator("[data-test=reverse]").click()
        await expect(page.locator("[data-test=notice]")).to_have_text("Reversed.")
        await expect(page.locator("[data-field=balance]")).to_have_text("700")
        await expect(page.locator("table.statement tr[data-type=reversal]")).to_have_count(1)
        after = await member(api, seeded, "m-1")
        assert (after["balance"], after["held"]) == (700, 0)


async def test_batch_followed_to_completion(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any
) -> None:
    program = await create_program(api)
    # The uploader signs in with its own key, so the batches page lists its batch alone.
    uploader = await make_key(ledger_app, ["ledger:read", "ledger:batch"])
    first = [HEADER, f"B-1,earn,,{program},,m-1,,,,,,,100", f"B-2,earn,,{program},,m-2,,,,,,,250"]
    rest = [f"B-3,earn,,{program},,m-3,,,,,,,50", "B-4,earn,,NOPE_XYZ,,m-4,,,,,,,10", "not,a,valid,line"]
    finish_upload = asyncio.Event()

    async def body() -> Any:
        # The file arrives in two parts: until the second, the batch is still receiving, so it cannot
        # complete whichever ledger process picks it up (every one in the test session may).
        yield ("\n".join(first) + "\n").encode()
        await finish_upload.wait()
        yield ("\n".join(rest) + "\n").encode()

    upload = asyncio.create_task(
        api.post(
            "/v1/batches",
            content=body(),
            headers={
                "Idempotency-Key": new_key(),
                "Content-Type": "text/csv",
                "Authorization": f"Bearer {uploader}",
            },
        )
    )
    try:
        async with watching(browser) as page:
            async with ledger_app.state.db.driver() as conn:
                key_id = await conn.fetchval(
                    "SELECT id FROM auth.api_keys WHERE key_hash = $1", hash_key(uploader)
                )
                batch_id = None
                for _ in range(400):  # the upload has created its batch
                    batch_id = await conn.fetchval(
                        "SELECT id FROM ledger.batches WHERE api_key_id = $1", key_id
                    )
                    if batch_id is not None or upload.done():
                        break
                    await asyncio.sleep(0.025)
            assert batch_id is not None, await upload
            await sign_in(page, stack.ledger.url, uploader)
            await page.click("nav a[href='/console/batches']")
            await expect(page.locator("tr[data-batch]")).to_have_count(1)
            await screenshots(page, "batches")
            await page.click(f"tr[data-batch='{batch_id}'] a")
            status = page.locator("#batch-progress [data-field=status]")
            await expect(status).to_have_text("receiving")
            await expect(page.locator("#batch-progress .live")).to_have_text("updating live")
            await screenshots(page, "batch-running")

            finish_upload.set()
            r = await upload
            assert r.status_code == 202, r.text
            processor = BatchProcessor(ledger_app.state.db)
            for _ in range(400):  # drive it here too; another ledger process may hold it meanwhile
                await processor.run_once()
                if (await api.get(f"/v1/batches/{batch_id}")).json()["status"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.025)
            await expect(status).to_have_text("completed", timeout=15_000)  # the page's script follows it
            await expect(page.locator("#batch-progress [data-field=posted]")).to_have_text("3")
            await expect(page.locator("#batch-progress [data-field=rejected]")).to_have_text("2")
            await expect(page.locator("#batch-progress [data-field=points_posted]")).to_have_text("400")
            await expect(page.locator("#batch-progress .live")).to_have_text(
                "finished; reload for the rejections"
            )

            await page.reload()
            reasons = page.locator("a[data-reason]")
            await expect(reasons).to_have_count(2)
            counts = [number(t) for t in await reasons.locator(".count").all_text_contents()]
            assert sum(counts) == 2
            await expect(page.locator("table.rejections tbody tr")).to_have_count(1)
            line = number(await page.locator("table.rejections tbody tr td").first.text_content() or "")
            assert line in (5, 6)  # the header is line 1
            await screenshots(page, "batch")
    finally:
        finish_upload.set()
        if not upload.done():
            await upload


async def test_read_only_key_sees_no_action_and_is_refused_one(
    browser: Any, stack: Stack, api: httpx.AsyncClient, ledger_app: Any, seeded: str
) -> None:
    reader = await make_key(ledger_app, ["ledger:read"], programs=[seeded])
    statement = (await api.get(f"/v1/programs/{seeded}/members/m-1/transactions")).json()["data"]
    earn_id = next(e["transaction_id"] for e in statement if e["type"] == "earn")
    async with watching(browser, expected=REFUSED_LOAD) as page:
        await sign_in(page, stack.ledger.url, reader)
        await expect(page.locator(".badge")).to_have_text("read-only")
        await page.goto(f"{stack.ledger.url}/console/programs/{seeded}/members/m-1")
        await expect(page.locator("[data-field=balance]")).to_have_text("1,200")
        await expect(
            page.locator("form[action*='/reverse'], form[action*='/void'], [data-test=reverse]")
        ).to_have_count(0)
        await page.goto(f"{stack.ledger.url}/console/programs/{seeded}")
        await expect(page.locator("form[action='/console/jobs/expire']")).to_have_count(0)
        # a hand-made POST, with the session's own CSRF token: still refused for this key
        status = await page.evaluate(
            """async (path) => {
                const csrf = document.querySelector("input[name=csrf]").value;
                const body = new URLSearchParams({csrf, reason: "x",
                    idempotency_key: "console-00000000-0000-0000-0000-00000000abcd"});
                const r = await fetch(path, {method: "POST", body});
                return r.status;
            }""",
            f"/console/transactions/{earn_id}/reverse",
        )
        assert status == 403
        assert (await member(api, seeded, "m-1"))["balance"] == 1200
        await page.goto(f"{stack.ledger.url}/console/sagas")
        await expect(page.locator("[data-test=saga-problem]")).to_have_count(
            2
        )  # no conversion:read, catalog:read


async def test_cross_site_form_is_refused(
    browser: Any, stack: Stack, api: httpx.AsyncClient, console_admin_key: str, seeded: str
) -> None:
    statement = (await api.get(f"/v1/programs/{seeded}/members/m-2/transactions")).json()["data"]
    target = f"{stack.ledger.url}/console/transactions/{statement[0]['transaction_id']}/reverse"
    evil = "http://localhost:9/evil"  # another site (localhost is not 127.0.0.1), answered by the route

    async def fulfil(route: Any) -> bool:
        if route.request.url != evil:
            return False
        await route.fulfill(
            content_type="text/html",
            body=f"""<!doctype html><form method="post" action="{target}">
              <input name="reason" value="stolen"><input name="idempotency_key"
              value="console-00000000-0000-0000-0000-00000000beef"></form>
              <script>document.forms[0].submit()</script>""",
        )
        return True

    async with watching(browser, fulfil=fulfil, expected=REFUSED_LOAD) as page:
        await sign_in(page, stack.ledger.url, console_admin_key)
        async with page.expect_response(target) as answer:
            await page.goto(evil)
        assert (await answer.value).status in (401, 403)  # the Strict cookie stays home: no session
        assert (await member(api, seeded, "m-2"))["balance"] == 700


async def test_sign_out(browser: Any, stack: Stack, console_admin_key: str) -> None:
    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, console_admin_key)
        cookies = await page.context.cookies()
        session = next(c for c in cookies if c["name"] == "jifen_console")
        assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
        await page.click("[data-test=sign-out]")
        await expect(page.locator("h1")).to_have_text("Sign in")
        await screenshots(page, "login")
        assert not [c for c in await page.context.cookies() if c["name"] == "jifen_console"]
        await page.goto(f"{stack.ledger.url}/console/batches")
        await expect(page).to_have_url(re.compile(r"/console/login\?next=/console/batches"))


async def test_a_stuck_conversion_is_retried_from_the_console(
    browser: Any, stack: Stack, api: httpx.AsyncClient, console_admin_key: str, service_keys: dict[str, str]
) -> None:
    src = await create_program(api)
    dst = await create_program(api)
    fund = await earn(api, src, "m-conv", 6000)
    assert fund["balance_after"]["balance"] == 6000
    auth = {"Authorization": f"Bearer {console_admin_key}"}
    async with httpx.AsyncClient(base_url=stack.conversion.url, headers=auth, timeout=30) as conv:
        rate = await conv.put(
            f"/v1/rates/{src}/{dst}",
            json={"from_points": 5, "to_points": 1, "fee_bps": 200, "min_from_points": 1},
        )
        assert rate.status_code == 201, rate.text
        quote = await conv.post(
            "/v1/quotes",
            json={"from_program": src, "to_program": dst, "member_ref": "m-conv", "from_points": 5000},
        )
        assert quote.status_code == 201, quote.text
    # A conversion process whose ledger is unreachable takes the conversion and schedules its retry an
    # hour away: a saga needing attention.
    cut_off = ServiceProcess(
        "conversion",
        stack.ledger.database_url,
        env={
            "JIFEN_LEDGER_URL": f"http://127.0.0.1:{free_port()}",
            "JIFEN_LEDGER_API_KEY": service_keys["conversion"],
            "JIFEN_CONVERSION_RECOVERY_INTERVAL_S": "3600",
            "JIFEN_CONVERSION_RETRY_BASE_S": "3600",
            "JIFEN_CONVERSION_RETRY_MAX_S": "3600",
        },
    )
    await asyncio.to_thread(cut_off.start)
    try:
        async with httpx.AsyncClient(base_url=cut_off.url, headers=auth, timeout=60) as conv:
            r = await conv.post(
                "/v1/conversions",
                json={"quote_id": quote.json()["id"]},
                headers={"Idempotency-Key": new_key()},
            )
    finally:
        await asyncio.to_thread(cut_off.stop)
    assert r.status_code == 202, r.text
    stuck = r.json()
    assert stuck["status"] in ("created", "debiting")

    async with watching(browser) as page:
        await sign_in(page, stack.ledger.url, console_admin_key)
        await page.click("nav a[href='/console/sagas']")
        row = page.locator(f"section[data-service=conversion] tr[data-saga='{stuck['id']}']")
        await expect(row).to_contain_text("m-conv")
        await screenshots(page, "sagas-stuck")
        await row.locator("[data-test=retry]").click()  # through the conversion service's API
        await expect(page.locator("[data-test=notice]")).to_have_text("Retried: now completed.")
        await expect(row).to_have_count(0)
        assert (await member(api, src, "m-conv"))["balance"] == 1000
        assert (await member(api, dst, "m-conv"))["balance"] == 980


async def test_docs_of_each_service(browser: Any, stack: Stack) -> None:
    for name, service, operation in (
        ("ledger", stack.ledger, "/v1/earn"),
        ("conversion", stack.conversion, "/v1/conversions"),
        ("catalog", stack.catalog, "/v1/redemptions"),
    ):
        async with watching(browser) as page:
            await page.goto(f"{service.url}/docs")
            await expect(page.locator(".opblock-summary-path", has_text=operation).first).to_be_visible(
                timeout=10_000
            )
            await screenshots(page, f"docs-{name}")
