"""Load benchmark of redemptions: POST /v1/redemptions against a throwaway embedded PostgreSQL.

Run with `.venv/bin/python bench/bench_catalog.py` (`--help` for options). It starts its own database,
ledger and catalog (uvicorn processes, as `jifen run` does), funds members through the ledger, creates
one reward (a voucher with codes by default) and drives redemptions from C concurrent keep-alive clients
in a separate load-generator process. Every redemption is a full saga: reserve stock, allowance and a
code, burn the points over HTTP at the ledger, issue the code. It prints redemptions per second and
latency, then checks the books: every 201 is one fulfilled redemption with one burn in the ledger and
distinct codes, and stock + fulfilled = initial stock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
import uuid
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
# Orchestration
# --------------------------------------------------------------------------------------------------


async def _setup(args: argparse.Namespace, ledger_url: str, catalog_url: str, secret: str) -> int | None:
    """Program, funded members, the reward and its codes. Returns the reward's initial stock."""
    import httpx

    headers = {"Authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=32)
    async with (
        httpx.AsyncClient(base_url=ledger_url, headers=headers, timeout=60, limits=limits) as ledger,
        httpx.AsyncClient(base_url=catalog_url, headers=headers, timeout=120) as catalog,
    ):
        r = await ledger.post(
            "/v1/programs",
            json={
                "code": PROGRAM,
                "name": "Bench",
                "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
            },
        )
        r.raise_for_status()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark POST /v1/redemptions on a throwaway catalog + ledger"
    )
    common.add_load_arguments(parser, clients=32, members=1000, procs=1)
    parser.add_argument("--type", choices=("voucher", "physical", "service"), default="voucher")
    parser.add_argument("--stock", type=int, default=1_000_000, help="initial stock; -1 for unlimited")
    parser.add_argument("--codes", type=int, default=30_000, help="voucher codes to upload (default 30000)")
    parser.add_argument("--catalog-workers", type=int, default=1, help="uvicorn workers for the catalog")
    parser.add_argument("--ledger-workers", type=int, default=1, help="uvicorn workers for the ledger")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.members < 1:
        parser.error("--duration must be > 0, --clients and --members >= 1")

    from services.migrate import upgrade

    procs: dict[str, subprocess.Popen[bytes]] = {}
    with common.throwaway_postgres("jifen-bench-catalog-") as (pg, data_dir, url):
        try:
            upgrade(url)
            _, admin, service_key = asyncio.run(common.create_api_keys(url, service="catalog"))
            host = "127.0.0.1"
            ports = {"ledger": common.free_port(host), "catalog": common.free_port(host)}
            settings = common.service_settings(data_dir, host, ports)
            urls = {name: f"http://{host}:{port}" for name, port in ports.items()}
            procs["ledger"] = common.start_service("ledger", settings, url, workers=args.ledger_workers)
            procs["catalog"] = common.start_service(
                "catalog", settings, url, workers=args.catalog_workers, ledger_key=service_key
            )
            print(f"funding {args.members} members and creating the reward", flush=True)
            stock = asyncio.run(_setup(args, urls["ledger"], urls["catalog"], admin))
            if args.type == "voucher" and stock is not None and args.codes < stock:
                print(f"note: {args.codes} codes < stock {stock}: codes may run out first (409 out_of_stock)")
            print(
                f"driving POST /v1/redemptions: {args.clients} clients, {args.warmup}s + {args.duration}s",
                flush=True,
            )
            pids = {name: p.pid for name, p in procs.items()} | {"postgres": common.postmaster_pid(pg.pgdata)}
            load = _run_load(args, host, ports["catalog"], admin, pids)
            observed_201 = load["everything"].get(201, 0)
            verify = asyncio.run(_verify(url, observed_201, len(load["unknown_keys"]), stock))
            result = _report(args, load, verify)
            if args.json:
                print(json.dumps({"bench_catalog": result}, sort_keys=True, default=str))
            return 0 if verify["ok"] and observed_201 > 0 else 1
        finally:
            for name in ("catalog", "ledger"):
                common.stop_process(procs.get(name))


if __name__ == "__main__":
    common.run_main(main, "the services and PostgreSQL")
