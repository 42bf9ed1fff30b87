"""Load benchmark of redemptions: POST /v1/redemptions against a throwaway embedded PostgreSQL.

Run with `.venv/bin/python bench/bench_catalog.py` (`--help` for options). It starts its own database,
ledger and catalog (uvicorn processes, as `jifen run` does), funds members through the ledger, creates
one reward (a voucher with codes by default) and drives redemptions from C concurrent keep-alive clients
in a separate load-generator process. Every redemption is a full saga: reserve stock, allowance and a
code, burn the points over HTTP at the ledger, issue the code. It prints redemptions per second and
latency, then checks the books: every 201 is one fulfilled redemption with one burn in the ledger and
distinct codes, and stock + fulfilled = initial stock.

Then a flash sale: 2,000 funded members (`--flash-members`), each on a connection opened beforehand,
redeem one unit of a voucher reward with 500 codes and 500 in stock (`--flash-codes`) at the same moment.
It prints how long the answers took from that moment (p50, p99) and checks that exactly 500 were
fulfilled with 500 distinct codes and their burns, the other 1,500 answered `409 out_of_stock`, nothing
else, and no saga is left open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import common

PROGRAM = "BENCH"
SKU = "BENCH-COUPON"
PRICE = 10
HTTP_TIMEOUT_S = 30.0
CODES_PER_UPLOAD = 10_000


# --------------------------------------------------------------------------------------------------
# Load generator (its own OS process)
# --------------------------------------------------------------------------------------------------


async def _drive(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    members = cfg["members"]

    def body(i: int) -> bytes:
        return orjson.dumps({"sku": SKU, "program": PROGRAM, "member_ref": f"m-{i % members}", "quantity": 1})

    async def redeem(call: common.Call, key: str, body: bytes) -> int | None:
        result = await call(None, "POST", "/v1/redemptions", key, body)
        return None if result is None else result[0]

    return await common.drive_clients(cfg, t0, body, redeem, timeout_s=HTTP_TIMEOUT_S)


# --------------------------------------------------------------------------------------------------
# Flash sale: every member at once, for fewer codes than members
# --------------------------------------------------------------------------------------------------

FLASH_SKU = "BENCH-FLASH"


async def _flash_setup(ledger_url: str, catalog_url: str, secret: str, members: int, codes: int) -> None:
    """The flash-sale reward (a voucher, `codes` in stock and as codes) and its funded members."""
    import httpx

    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        httpx.AsyncClient(base_url=ledger_url, headers=headers, timeout=60) as ledger,
        httpx.AsyncClient(base_url=catalog_url, headers=headers, timeout=60) as catalog,
    ):
        sem = asyncio.Semaphore(32)

        async def fund(i: int) -> None:
            async with sem:
                body = {"program": PROGRAM, "member_ref": f"flash-{i}", "points": PRICE, "reference": "flash"}
                r = await ledger.post("/v1/earn", json=body, headers={"Idempotency-Key": f"flash-fund-{i}"})
                r.raise_for_status()

        await asyncio.gather(*(fund(i) for i in range(members)))
        reward = {"sku": FLASH_SKU, "name": "Flash sale coupon", "type": "voucher", "program": PROGRAM,
                  "price_points": PRICE, "stock": codes}  # fmt: skip
        (await catalog.post("/v1/rewards", json=reward)).raise_for_status()
        run = uuid.uuid4().hex[:8]
        batch = [f"F{run}-{i:06d}" for i in range(codes)]
        (await catalog.post(f"/v1/rewards/{FLASH_SKU}/codes", json={"codes": batch})).raise_for_status()


async def _flash_sale(
    host: str, port: int, secret: str, members: int, pids: dict[str, int | None]
) -> dict[str, Any]:
    """One connection per member, opened (and used once) before the sale opens; then every member sends
    one redemption at the same moment. Latency counts from that moment."""
    import orjson

    conns = [common.RawConnection(host, port, secret, HTTP_TIMEOUT_S) for _ in range(members)]
    try:
        for i in range(0, members, 200):
            await asyncio.gather(*(c.request("GET", "/healthz", None, None) for c in conns[i : i + 200]))
        gate = asyncio.Event()
        statuses: Counter[str] = Counter()
        codes: list[str] = []
        latencies: list[float] = []
        by_status: dict[int, list[float]] = {}
        opened = 0.0

        async def member(i: int, conn: common.RawConnection) -> None:
            body = orjson.dumps(
                {"sku": FLASH_SKU, "program": PROGRAM, "member_ref": f"flash-{i}", "quantity": 1}
            )
            await gate.wait()
            try:
                status, _, data = await conn.request("POST", "/v1/redemptions", f"flash-{i}", body)
            except common.TransportError as exc:
                statuses[f"no response ({exc})"] += 1
                return
            latencies.append(time.monotonic() - opened)
            by_status.setdefault(status, []).append(latencies[-1])
            answer = orjson.loads(data)
            if status == 201:
                codes.extend(answer["voucher_codes"])
            statuses[f"{status} {answer.get('code') or answer.get('status')}"] += 1

        tasks = [asyncio.create_task(member(i, c)) for i, c in enumerate(conns)]
        await asyncio.sleep(0.2)  # every task is waiting at the gate
        cpu0 = {name: common.tree_cpu_s(pid) for name, pid in pids.items()}
        opened = time.monotonic()
        gate.set()
        await asyncio.gather(*tasks)
        makespan = time.monotonic() - opened
        cpu_s = {name: common.tree_cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
    finally:
        for c in conns:
            c.close()
    latencies.sort()
    per_status = {str(k): common.latency_ms(sorted(v), "p50", "p99") for k, v in sorted(by_status.items())}
    return {"statuses": dict(statuses), "codes": codes, "makespan_s": makespan,
            "latency_ms": common.latency_ms(latencies, "p50", "p99"), "latency_ms_by_status": per_status,
            "cpu_pct": {name: 100.0 * t / makespan for name, t in cpu_s.items()}}  # fmt: skip


async def _flash_verify(url: str, sale: dict[str, Any], members: int, stock: int) -> dict[str, Any]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        red = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'fulfilled') AS fulfilled, count(*) AS total,"
            " count(*) FILTER (WHERE status IN ('debiting', 'refunding', 'cancelling')) AS open"
            " FROM catalog.redemptions WHERE sku = $1",
            FLASH_SKU,
        )
        reward = await conn.fetchrow(
            "SELECT r.stock, (SELECT count(*) FROM catalog.voucher_codes c WHERE c.reward_id = r.id"
            " AND c.status = 'issued') AS issued FROM catalog.rewards r WHERE r.sku = $1",
            FLASH_SKU,
        )
        burns = await conn.fetchval(
            "SELECT count(*) FROM ledger.transactions t JOIN catalog.redemptions r ON t.reference = r.id::text"
            " WHERE r.sku = $1 AND t.type = 'burn' AND t.reversed_points = 0",
            FLASH_SKU,
        )
    finally:
        await conn.close()
    st = sale["statuses"]
    checks = {
        f"{stock} fulfilled (201), {members - stock} 409 out_of_stock, nothing else": st
        == {"201 fulfilled": stock, "409 out_of_stock": members - stock},
        f"{stock} distinct codes answered": len(sale["codes"]) == len(set(sale["codes"])) == stock,
        "one redemption per fulfilled answer, none left open": (red["fulfilled"], red["total"], red["open"])
        == (stock, stock, 0),
        "one kept burn per fulfilled redemption": int(burns) == stock,
        "stock 0, every code issued": (reward["stock"], reward["issued"]) == (0, stock),
    }
    return {"ok": all(checks.values()), "checks": checks}


def _run_flash(
    args: argparse.Namespace,
    urls: dict[str, str],
    host: str,
    port: int,
    secret: str,
    url: str,
    pids: dict[str, int | None],
) -> dict[str, Any]:
    print(f"flash sale: funding {args.flash_members} members, {args.flash_codes} codes", flush=True)
    asyncio.run(_flash_setup(urls["ledger"], urls["catalog"], secret, args.flash_members, args.flash_codes))
    sale = asyncio.run(_flash_sale(host, port, secret, args.flash_members, pids))
    verify = asyncio.run(_flash_verify(url, sale, args.flash_members, args.flash_codes))
    lm = sale["latency_ms"]
    print()
    print(f"flash sale  {args.flash_members} members at once for {args.flash_codes} voucher codes")
    print(
        f"  answered in   {sale['makespan_s']:.2f}s  ({args.flash_members / sale['makespan_s']:.0f} answers/s)"
    )
    print(f"  latency ms    p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  (from the moment the sale opened)")
    for status, sl in sale["latency_ms_by_status"].items():
        print(f"    {status}         p50 {sl['p50']:.2f}  p99 {sl['p99']:.2f}")
    print(f"  server CPU    {common.cpu_text(sale['cpu_pct'])}  (% of one core, during the sale)")
    print(f"  answers       {sale['statuses']}")
    print(f"  verify        {'OK' if verify['ok'] else 'FAILED'}")
    common.print_failed_checks(verify["checks"])
    return {"members": args.flash_members, "codes": args.flash_codes, "makespan_s": sale["makespan_s"],
            "latency_ms": lm, "latency_ms_by_status": sale["latency_ms_by_status"], "cpu_pct": sale["cpu_pct"],
            "statuses": sale["statuses"], "verify": verify}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


async def _create_program(ledger_url: str, secret: str) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=ledger_url, headers={"Authorization": f"Bearer {secret}"}
    ) as ledger:
        r = await ledger.post(
            "/v1/programs",
            json={
                "code": PROGRAM,
                "name": "Bench",
                "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
                # Members are funded with 10**12 points each, in one earn.
                "max_points_per_transaction": 10**13,
            },
        )
        r.raise_for_status()


async def _setup(args: argparse.Namespace, ledger_url: str, catalog_url: str, secret: str) -> int | None:
    """Program, funded members, the reward and its codes. Returns the reward's initial stock."""
    import httpx

    headers = {"Authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=32)
    await _create_program(ledger_url, secret)
    async with (
        httpx.AsyncClient(base_url=ledger_url, headers=headers, timeout=60, limits=limits) as ledger,
        httpx.AsyncClient(base_url=catalog_url, headers=headers, timeout=120) as catalog,
    ):
        sem = asyncio.Semaphore(32)

        async def fund(i: int) -> None:
            async with sem:
                body = {"program": PROGRAM, "member_ref": f"m-{i}", "points": 10**12, "reference": "bench"}
                resp = await ledger.post("/v1/earn", json=body, headers={"Idempotency-Key": f"fund-{i}"})
                resp.raise_for_status()

        await asyncio.gather(*(fund(i) for i in range(args.members)))
        stock = None if args.stock < 0 else args.stock
        reward = {
            "sku": SKU,
            "name": "Bench coupon",
            "type": args.type,
            "program": PROGRAM,
            "price_points": PRICE,
        }
        if stock is not None:
            reward["stock"] = stock
        (await catalog.post("/v1/rewards", json=reward)).raise_for_status()
        if args.type == "voucher":
            run = uuid.uuid4().hex[:8]
            for start in range(0, args.codes, CODES_PER_UPLOAD):
                codes = [f"B{run}-{i:08d}" for i in range(start, min(args.codes, start + CODES_PER_UPLOAD))]
                (await catalog.post(f"/v1/rewards/{SKU}/codes", json={"codes": codes})).raise_for_status()
    return stock


def _run_load(
    args: argparse.Namespace, host: str, port: int, secret: str, pids: dict[str, int | None]
) -> dict[str, Any]:
    cfg = {"members": args.members, "host": host, "port": port, "secret": secret}
    _, gathered, window = common.run_load(
        _drive, cfg, clients=args.clients, procs=args.procs, warmup=args.warmup, duration=args.duration,
        timeout_s=HTTP_TIMEOUT_S, pids=pids,
    )  # fmt: skip
    return common.merge_results(gathered) | {"cpu_pct": window["cpu_pct"]}


async def _verify(url: str, observed_201: int, unknown: int, stock: int | None) -> dict[str, Any]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        deadline = time.monotonic() + 30  # sagas cut short by the end of the run finish by themselves
        while time.monotonic() < deadline:
            open_sagas = await conn.fetchval(
                "SELECT count(*) FROM catalog.redemptions WHERE status IN ('debiting', 'refunding', 'cancelling')"
            )
            if open_sagas == 0:
                break
            await asyncio.sleep(0.5)
        red = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'fulfilled') AS fulfilled,"
            " count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS total FROM catalog.redemptions"
        )
        reward = await conn.fetchrow("SELECT stock, stock_total FROM catalog.rewards WHERE sku = $1", SKU)
        burns = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE t.reversed_points = 0) AS kept,"
            " coalesce(sum(t.points) FILTER (WHERE t.reversed_points = 0), 0) AS kept_points"
            " FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id"
            " WHERE p.code = $1 AND t.type = 'burn'",
            PROGRAM,
        )
        codes = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'issued') AS issued,"
            " count(DISTINCT redemption_id) FILTER (WHERE status = 'issued') AS holders"
            " FROM catalog.voucher_codes"
        )
        open_sagas = await conn.fetchval(
            "SELECT count(*) FROM catalog.redemptions WHERE status IN ('debiting', 'refunding', 'cancelling')"
        )
    finally:
        await conn.close()
    fulfilled = int(red["fulfilled"])
    checks = {
        "every 201 is a fulfilled redemption": observed_201 <= fulfilled <= observed_201 + unknown,
        "no saga left unfinished": open_sagas == 0,
        "one kept burn per fulfilled redemption": int(burns["kept"]) == fulfilled,
        "points burned and kept = fulfilled x price": int(burns["kept_points"]) == PRICE * fulfilled,
        "stock + fulfilled = initial stock": stock is None or int(reward["stock"]) + fulfilled == stock,
        "issued codes = fulfilled voucher redemptions": int(codes["issued"]) in (0, fulfilled)
        and int(codes["holders"]) == int(codes["issued"]),
    }
    return {"ok": all(checks.values()), "checks": checks, "fulfilled": fulfilled, "failed": int(red["failed"]),
            "burns": int(burns["n"]), "codes_issued": int(codes["issued"]),
            "stock_left": None if reward["stock"] is None else int(reward["stock"])}  # fmt: skip


def _report(args: argparse.Namespace, load: dict[str, Any], verify: dict[str, Any]) -> dict[str, Any]:
    lat = load["latencies"]
    completed = sum(load["measured"].values())
    ok = sum(n for s, n in load["measured"].items() if 200 <= s < 300)
    result = {
        "settings": {k: getattr(args, k) for k in ("clients", "members", "type", "stock", "duration", "warmup",
                                                    "catalog_workers", "ledger_workers")},
        "requests_per_s": completed / args.duration,
        "redemptions_per_s": ok / args.duration,
        "latency_ms": common.latency_ms(lat, "p50", "p99", "p999", mean_max=False),
        "errors_by_code": dict(load["problems"]),
        "transport_errors": dict(load["transport"]),
        "cpu_pct": load["cpu_pct"],
        "verify": verify,
    }  # fmt: skip
    lm = result["latency_ms"]
    print()
    print(
        f"POST /v1/redemptions  type={args.type} stock={'unlimited' if args.stock < 0 else args.stock}"
        f" clients={args.clients} members={args.members} catalog workers={args.catalog_workers}"
        f" ledger workers={args.ledger_workers} duration={args.duration}s (+{args.warmup}s warm-up)"
        f" cpus={os.cpu_count()}"
    )
    print(f"  redemptions/s {result['redemptions_per_s']:.1f}  (requests/s {result['requests_per_s']:.1f})")
    print(f"  latency ms    p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  p999 {lm['p999']:.2f}")
    print(
        f"  non-2xx       {dict(load['problems']) or 'none'}; transport {dict(load['transport']) or 'none'}"
    )
    print(f"  server CPU    {common.cpu_text(load['cpu_pct'])}  (% of one core)")
    print(
        f"  verify        {'OK' if verify['ok'] else 'FAILED'}: {verify['fulfilled']} fulfilled,"
        f" {verify['failed']} failed, {verify['burns']} burns, {verify['codes_issued']} codes issued,"
        f" stock left {verify['stock_left']}"
    )
    common.print_failed_checks(verify["checks"])
    return result


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"bench_catalog": result}, sort_keys=True, default=str))
    if args.result is not None:
        args.result.write_text(json.dumps({"bench_catalog": result}, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark POST /v1/redemptions on a throwaway catalog + ledger"
    )
    common.add_load_arguments(parser, clients=32, members=1000, procs=1)
    parser.add_argument("--type", choices=("voucher", "physical", "service"), default="voucher")
    parser.add_argument("--stock", type=int, default=1_000_000, help="initial stock; -1 for unlimited")
    parser.add_argument("--codes", type=int, default=30_000, help="voucher codes to upload (default 30000)")
    parser.add_argument(
        "--catalog-workers",
        type=int,
        default=None,
        help="uvicorn workers for the catalog (default: as jifen run)",
    )
    parser.add_argument(
        "--ledger-workers",
        type=int,
        default=None,
        help="uvicorn workers for the ledger (default: as jifen run)",
    )
    parser.add_argument(
        "--flash-members", type=int, default=2000, help="flash sale: members at once (0: none)"
    )
    parser.add_argument("--flash-codes", type=int, default=500, help="flash sale: codes (and stock)")
    parser.add_argument(
        "--flash-only", action="store_true", help="only the flash sale (no load phase before it)"
    )
    parser.add_argument("--result", type=Path, default=None, help="write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.members < 1:
        parser.error("--duration must be > 0, --clients and --members >= 1")
    if args.flash_only and args.flash_members < 1:
        parser.error("--flash-only needs --flash-members >= 1")

    from services.settings import Settings

    args.catalog_workers = args.catalog_workers or Settings().service_workers("catalog")
    args.ledger_workers = args.ledger_workers or Settings().service_workers("ledger")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with common.throwaway_postgres("jifen-bench-catalog-") as (pg, data_dir, url):
        try:
            workers = {"ledger": args.ledger_workers, "catalog": args.catalog_workers}
            admin, host, ports, urls = common.start_stack("catalog", data_dir, url, workers, procs)
            pids = {name: p.pid for name, p in procs.items()} | {"postgres": common.postmaster_pid(pg.pgdata)}
            if args.flash_only:
                asyncio.run(_create_program(urls["ledger"], admin))
                flash = _run_flash(args, urls, host, ports["catalog"], admin, url, pids)
                result = {"flash_sale": flash}
                _write(args, result)
                return 0 if flash["verify"]["ok"] else 1
            print(f"funding {args.members} members and creating the reward", flush=True)
            stock = asyncio.run(_setup(args, urls["ledger"], urls["catalog"], admin))
            if args.type == "voucher" and stock is not None and args.codes < stock:
                print(f"note: {args.codes} codes < stock {stock}: codes may run out first (409 out_of_stock)")
            print(
                f"driving POST /v1/redemptions: {args.clients} clients, {args.warmup}s + {args.duration}s",
                flush=True,
            )
            load = _run_load(args, host, ports["catalog"], admin, pids)
            observed_201 = load["everything"].get(201, 0)
            verify = asyncio.run(_verify(url, observed_201, len(load["unknown_keys"]), stock))
            result = _report(args, load, verify)
            ok = verify["ok"] and observed_201 > 0
            if args.flash_members > 0:
                result["flash_sale"] = _run_flash(args, urls, host, ports["catalog"], admin, url, pids)
                ok = ok and result["flash_sale"]["verify"]["ok"]
            _write(args, result)
            return 0 if ok else 1
        finally:
            for name in ("catalog", "ledger"):
                common.stop_process(procs.get(name))


if __name__ == "__main__":
    common.run_main(main, "the services and PostgreSQL")
