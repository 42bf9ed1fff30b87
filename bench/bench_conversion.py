"""Load benchmark of conversions end to end: POST /v1/conversions on the conversion service, which debits
and credits the member through the ledger over HTTP, against a throwaway embedded PostgreSQL.

Run with `.venv/bin/python bench/bench_conversion.py --help`. The same approach as bench_ledger.py (the
database, service, load-generator and report plumbing both take from bench/common.py): it starts its own
database, the ledger and the conversion service (uvicorn processes),
creates two programs and a rate, funds the members, drives POST /v1/conversions from C concurrent
keep-alive clients in separate load-generator processes, prints conversions per second and latency, then
checks the books: every 201 is a completed conversion with its two ledger legs, and nothing else moved.
Then it drives POST /v1/valuations (points -> cash and cash -> points) from the same number of clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

SRC, DST = "BSRC", "BDST"
FROM_POINTS = 500  # per conversion; at 5:1 with 200 bps: fee 10, 98 DST points
RATE = {"from_points": 5, "to_points": 1, "fee_bps": 200, "min_from_points": 100}
TO_POINTS = (
    (FROM_POINTS - -(-FROM_POINTS * RATE["fee_bps"] // 10_000)) * RATE["to_points"] // RATE["from_points"]
)
FUNDING = 10**12  # per member: never the limit
HTTP_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------------
# Load generator (its own OS processes)
# --------------------------------------------------------------------------------------------------


async def _drive(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    members = cfg["members"]

    def body(i: int) -> bytes:
        return orjson.dumps(
            {
                "from_program": SRC,
                "to_program": DST,
                "member_ref": f"m-{i % members}",
                "from_points": FROM_POINTS,
            }
        )

    async def convert(call: common.Call, key: str, body: bytes) -> int | None:
        result = await call(None, "POST", "/v1/conversions", key, body)
        return None if result is None else result[0]

    def problem(status: int, data: bytes) -> str | None:  # anything but 201, 202 (unfinished) too
        if status == 201:
            return None
        try:
            return str(orjson.loads(data).get("code") or orjson.loads(data).get("state", "?"))
        except (orjson.JSONDecodeError, AttributeError):
            return "?"

    return await common.drive_clients(
        cfg, t0, body, convert, timeout_s=HTTP_TIMEOUT_S, problem_code=problem, latency_status=201
    )


async def _drive_valuations(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    def body(i: int) -> bytes:  # both directions, as a checkout asks them
        if i % 2:
            return orjson.dumps({"program": SRC, "points": 500 + i % 1000})
        return orjson.dumps({"program": SRC, "cash_minor": 100 + i % 1000, "currency": "CNY"})

    async def value(call: common.Call, _: str, body: bytes) -> int | None:
        result = await call(None, "POST", "/v1/valuations", None, body)
        return None if result is None else result[0]

    return await common.drive_clients(cfg, t0, body, value, timeout_s=HTTP_TIMEOUT_S, latency_status=200)


def _run_valuations(args: argparse.Namespace, host: str, port: int, secret: str) -> dict[str, Any]:
    cfg = {"members": args.members, "host": host, "port": port, "secret": secret}
    _, gathered, window = common.run_load(
        _drive_valuations, cfg, clients=args.clients, procs=args.procs, warmup=args.warmup,
        duration=args.duration, timeout_s=HTTP_TIMEOUT_S, pids=args.pids,
    )  # fmt: skip
    load = common.merge_results(gathered)
    ok = load["measured"].get(200, 0)
    result = {
        "valuations_per_s": ok / args.duration,
        "latency_ms": common.latency_ms(load["latencies"], "p50", "p99"),
        "non_200_whole_run": dict(load["problems"]),
        "transport_errors_whole_run": dict(load["transport"]),
        "cpu_pct": window["cpu_pct"],
    }
    lm = result["latency_ms"]
    print()
    print(f"POST /v1/valuations  clients={args.clients} workers={args.workers} duration={args.duration}s")
    print(f"  valuations/s  {result['valuations_per_s']:.1f}")
    print(
        f"  latency ms    p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  (mean {lm['mean']:.2f}, max {lm['max']:.2f})"
    )
    if result["non_200_whole_run"] or result["transport_errors_whole_run"]:
        print(
            f"  non-200       {result['non_200_whole_run']}  transport {result['transport_errors_whole_run']}"
        )
    print(f"  CPU           {common.cpu_text(window['cpu_pct'])}  (% of one core)")
    return result


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


async def _setup(ledger_url: str, conversion_url: str, secret: str, members: int) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(headers=auth, timeout=60) as client:
        for code, cash in ((SRC, 100), (DST, 500)):
            body = {
                "code": code,
                "name": f"Benchmark {code}",
                "cash_value": {"points": 500, "cash_minor": cash, "currency": "CNY"},
                "max_points_per_transaction": 10 * FUNDING,  # members are funded in one earn each
            }
            r = await client.post(f"{ledger_url}/v1/programs", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"creating program {code} failed: {r.status_code} {r.text}")
        r = await client.put(f"{conversion_url}/v1/rates/{SRC}/{DST}", json=RATE)
        if r.status_code != 201:
            raise RuntimeError(f"publishing the rate failed: {r.status_code} {r.text}")
        limit = asyncio.Semaphore(16)

        async def fund(m: int) -> None:
            async with limit:
                r = await client.post(
                    f"{ledger_url}/v1/earn",
                    json={"program": SRC, "member_ref": f"m-{m}", "points": FUNDING, "reference": "fund"},
                    headers={"Idempotency-Key": f"fund-{m}"},
                )
                if r.status_code != 201:
                    raise RuntimeError(f"funding m-{m} failed: {r.status_code} {r.text}")

        await asyncio.gather(*(fund(m) for m in range(members)))


def _run_load(args: argparse.Namespace, host: str, port: int, secret: str) -> dict[str, Any]:
    cfg = {"members": args.members, "host": host, "port": port, "secret": secret}
    nprocs, gathered, window = common.run_load(
        _drive, cfg, clients=args.clients, procs=args.procs, warmup=args.warmup, duration=args.duration,
        timeout_s=HTTP_TIMEOUT_S, pids=args.pids,
    )  # fmt: skip
    return common.merge_results(gathered) | {
        "nprocs": nprocs,
        "cpu_pct": window["cpu_pct"],
        "machine": {"machine_cpu_pct": window["machine_cpu_pct"], "load_avg_1m": window["load_avg_1m"]},
        "loadgen_cpu_pct": [100.0 * g["cpu_s"] / g["wall_s"] if g["wall_s"] else 0.0 for g in gathered],
    }


async def _wait_settled(url: str, timeout_s: float = 60.0) -> int:
    """Waits until no conversion is unfinished (those answered 202 finish in the background)."""
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            n = int(
                await conn.fetchval(
                    "SELECT count(*) FROM conversion.conversions"
                    " WHERE status NOT IN ('completed', 'rejected', 'compensated', 'failed')"
                )
            )
            if n == 0 or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _verify(url: str, observed_201: int, members: int) -> dict[str, Any]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        states = {
            r["state"]: r["n"]
            for r in await conn.fetch(
                "SELECT status AS state, count(*) AS n FROM conversion.conversions GROUP BY status"
            )
        }
        completed = states.get("completed", 0)
        sums = {
            r["code"]: (int(r["members"]), int(r["clearing"]))
            for r in await conn.fetch(
                """SELECT p.code,
                       (SELECT coalesce(sum(balance), 0) FROM ledger.accounts a
                        WHERE a.program_id = p.id AND a.kind = 'member') AS members,
                       (SELECT coalesce(sum(amount), 0) FROM ledger.postings po
                        WHERE po.account_id = p.conversion_account) AS clearing
                   FROM ledger.programs p WHERE p.code = ANY ($1::text[])""",
                [SRC, DST],
            )
        }
        legs = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE t.type = 'burn') AS burns,
                      count(*) FILTER (WHERE t.type = 'earn' AND t.kind = 'bonus') AS earns
               FROM ledger.transactions t JOIN conversion.conversions c ON t.reference = c.id::text
               WHERE c.status = 'completed'"""
        )
    finally:
        await conn.close()
    checks = {
        "every 201 is a completed conversion": completed >= observed_201,
        "nothing unfinished or failed": set(states) <= {"completed", "rejected"},
        "one burn and one earn per completed conversion": (legs["burns"], legs["earns"])
        == (completed, completed),
        f"{SRC} member balances == funding - {FROM_POINTS} x completed": sums[SRC][0]
        == FUNDING * members - FROM_POINTS * completed,
        f"{DST} member balances == {TO_POINTS} x completed": sums[DST][0] == TO_POINTS * completed,
        "clearing accounts mirror the members": sums[SRC][1] == FROM_POINTS * completed
        and sums[DST][1] == -TO_POINTS * completed,
    }
    return {"ok": all(checks.values()), "checks": checks, "states": states, "completed": completed}


def _report(args: argparse.Namespace, load: dict[str, Any], verify: dict[str, Any]) -> dict[str, Any]:
    lat = load["latencies"]
    ok = load["measured"].get(201, 0)
    result = {
        "settings": {
            "clients": args.clients,
            "members": args.members,
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "loadgen_processes": load["nprocs"],
            "cpus": os.cpu_count(),
        },
        "conversions": ok,
        "conversions_per_s": ok / args.duration,
        "latency_ms": common.latency_ms(lat, "p50", "p99"),
        "non_201_whole_run": dict(load["problems"]),
        "transport_errors_whole_run": dict(load["transport"]),
        "cpu_pct": {**load["cpu_pct"], "loadgen": load["loadgen_cpu_pct"]},
        "machine": load["machine"],
        "verify": verify,
    }
    s, lm = result["settings"], result["latency_ms"]
    print()
    print(
        f"POST /v1/conversions  clients={s['clients']} members={s['members']} workers={s['workers']}"
        f" duration={s['duration_s']}s (+{s['warmup_s']}s warm-up) loadgen={s['loadgen_processes']}"
        f" cpus={s['cpus']}"
    )
    print(f"  conversions   {ok} completed (201) in {args.duration}s, each a burn and an earn over HTTP")
    print(f"  conversions/s {result['conversions_per_s']:.1f}")
    print(
        f"  latency ms    p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  (mean {lm['mean']:.2f}, max {lm['max']:.2f})"
    )
    if result["non_201_whole_run"] or result["transport_errors_whole_run"]:
        print(
            f"  non-201       {result['non_201_whole_run']}  transport {result['transport_errors_whole_run']}"
        )
    gen = " ".join(f"{v:.0f}%" for v in load["loadgen_cpu_pct"])
    print(f"  CPU           {common.cpu_text(load['cpu_pct'])}  loadgen {gen}  (% of one core)")
    m = load["machine"]
    print(
        f"  machine       {m['machine_cpu_pct']:.0f}% of all {s['cpus']} cores busy, load average"
        f" {m['load_avg_1m']:.1f} (other work on the machine slows every process here)"
    )
    print(f"  verify        {'OK' if verify['ok'] else 'FAILED'}: states {verify['states']}")
    common.print_failed_checks(verify["checks"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark POST /v1/conversions end to end")
    common.add_load_arguments(parser, clients=32, members=500, procs=1)
    parser.add_argument(
        "--workers", type=int, default=None, help="uvicorn workers per service (default: as jifen run)"
    )
    parser.add_argument("--no-valuations", action="store_true", help="skip the POST /v1/valuations load")
    parser.add_argument("--result", type=Path, default=None, help="write the result as JSON to this file")
    args = parser.parse_args(argv)
    from services.settings import Settings

    workers = {name: args.workers or Settings().service_workers(name) for name in ("ledger", "conversion")}
    args.workers = args.workers or workers["conversion"]
    if args.duration <= 0 or args.warmup < 0 or min(args.clients, args.members, args.workers) < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --clients/--members/--workers >= 1")

    procs: dict[str, subprocess.Popen[bytes]] = {}
    with common.throwaway_postgres("jifen-bench-conv-") as (pg, data_dir, url):
        try:
            secret, host, ports, urls = common.start_stack("conversion", data_dir, url, workers, procs)
            print(f"creating programs {SRC} -> {DST}, a rate, and {args.members} funded members", flush=True)
            asyncio.run(_setup(urls["ledger"], urls["conversion"], secret, args.members))
            args.pids = {
                "conversion": procs["conversion"].pid,
                "ledger": procs["ledger"].pid,
                "postgres": common.postmaster_pid(pg.pgdata),
            }

            print(
                f"driving POST /v1/conversions: {args.clients} clients, {args.warmup}s warm-up + {args.duration}s",
                flush=True,
            )
            load = _run_load(args, host, ports["conversion"], secret)
            unsettled = asyncio.run(_wait_settled(url))
            if unsettled:
                print(f"warning: {unsettled} conversions still unfinished after 60s", file=sys.stderr)
            verify = asyncio.run(_verify(url, load["everything"].get(201, 0), args.members))
            result = _report(args, load, verify)
            result["settings"]["ledger_workers"] = workers["ledger"]
            if not args.no_valuations:
                print(f"driving POST /v1/valuations: {args.clients} clients", flush=True)
                result["valuations"] = _run_valuations(args, host, ports["conversion"], secret)
            if args.json:
                print(json.dumps({"bench_conversion": result}, sort_keys=True, default=str))
            if args.result is not None:
                args.result.write_text(json.dumps({"bench_conversion": result}, sort_keys=True, default=str))
            return 0 if verify["ok"] and result["conversions"] > 0 else 1
        finally:
            for proc in procs.values():
                common.stop_process(proc)


if __name__ == "__main__":
    common.run_main(main, "the services and PostgreSQL")
