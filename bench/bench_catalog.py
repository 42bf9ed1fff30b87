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
import math
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

PROGRAM = "BENCH"
SKU = "BENCH-COUPON"
PRICE = 10
HTTP_TIMEOUT_S = 30.0
CODES_PER_UPLOAD = 10_000


# --------------------------------------------------------------------------------------------------
# Load generator (its own OS process)
# --------------------------------------------------------------------------------------------------


class _TransportError(Exception):
    """No (complete) response: the outcome is unknown."""


class _RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: cheap enough not to be the bottleneck."""

    def __init__(self, host: str, port: int, secret: str, path: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nIdempotency-Key: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, key: str, body: bytes) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                reader, writer = self.reader, self.writer
                assert reader is not None
                writer.write(
                    b"".join(
                        (
                            self.head,
                            key.encode(),
                            b"\r\nContent-Length: ",
                            str(len(body)).encode(),
                            b"\r\n\r\n",
                            body,
                        )
                    )
                )
                lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
                status = int(lines[0].split(b" ", 2)[1])
                length, chunked, close = -1, False, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name, value = name.strip().lower(), value.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        chunked = b"chunked" in value
                    elif name == b"connection":
                        close = value == b"close"
                if chunked:
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        parts.append(await reader.readexactly(size))
                        await reader.readexactly(2)
                    data = b"".join(parts)
                elif length >= 0:
                    data = await reader.readexactly(length)
                else:
                    data, close = await reader.read(), True
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            self.close()
            raise _TransportError(type(exc).__name__) from exc
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, data


async def _drive(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    warm_end = t0 + cfg["warmup"]
    end = warm_end + cfg["duration"]
    latencies = array("d")
    measured: Counter[int] = Counter()
    everything: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    unknown_keys: list[str] = []
    counter = [cfg["index"]]

    async def one_client(cid: int) -> None:
        conn = _RawConnection(cfg["host"], cfg["port"], cfg["secret"], "/v1/redemptions")
        seq = 0
        try:
            while time.monotonic() < end:
                i = counter[0]
                counter[0] += cfg["nprocs"]
                body = orjson.dumps(
                    {"sku": SKU, "program": PROGRAM, "member_ref": f"m-{i % cfg['members']}", "quantity": 1}
                )
                key = f"{cfg['run_id']}-{cfg['index']}-{cid}-{seq}"
                seq += 1
                started = time.monotonic()
                try:
                    status, data = await conn.post(key, body)
                except _TransportError as exc:
                    transport[str(exc)] += 1
                    unknown_keys.append(key)
                    continue
                finished = time.monotonic()
                everything[status] += 1
                if not 200 <= status < 300:
                    try:
                        code = str(orjson.loads(data).get("code", "?"))
                    except (orjson.JSONDecodeError, AttributeError):
                        code = "?"
                    problems[f"{status} {code}"] += 1
                if warm_end <= finished <= end:
                    measured[status] += 1
                    latencies.append(finished - started)
        finally:
            conn.close()

    await asyncio.gather(*(one_client(c) for c in range(cfg["clients"])))
    return {
        "latencies": latencies,
        "measured": dict(measured),
        "everything": dict(everything),
        "problems": dict(problems),
        "transport": dict(transport),
        "unknown_keys": unknown_keys,
    }


def _load_process(cfg: dict[str, Any], barrier: Any, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import orjson  # noqa: F401  (before the barrier)

        try:
            import uvloop

            run: Any = uvloop.run
        except ImportError:  # pragma: no cover
            run = asyncio.run
        barrier.wait(timeout=120)
        results.put(run(_drive(cfg, time.monotonic())))
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(name: str, base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {name} exited with code {proc.returncode} before it became ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the {name} was not ready within {timeout_s:.0f}s")


async def _create_keys(url: str) -> tuple[str, str]:
    from services.auth import SCOPES, create_api_key
    from services.db import Database
    from services.keyfiles import SERVICE_LEDGER_SCOPES

    db = Database(url, pool_size=1)
    try:
        _, admin = await create_api_key(db, name="bench-admin", scopes=SCOPES)
        _, service = await create_api_key(db, name="catalog-service", scopes=SERVICE_LEDGER_SCOPES["catalog"])
    finally:
        await db.dispose()
    return admin, service


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


def _tree_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        kids = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for p in kids:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[max(1, math.ceil(q * len(values))) - 1]


def _run_load(
    args: argparse.Namespace, host: str, port: int, secret: str, pids: dict[str, int | None]
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    nprocs = max(1, min(args.procs, args.clients))
    share = [args.clients // nprocs + (1 if i < args.clients % nprocs else 0) for i in range(nprocs)]
    barrier = ctx.Barrier(nprocs + 1)
    results: Any = ctx.Queue()
    run_id = uuid.uuid4().hex[:12]
    procs = []
    for index in range(nprocs):
        cfg = {
            "index": index, "nprocs": nprocs, "clients": share[index], "members": args.members,
            "warmup": args.warmup, "duration": args.duration, "host": host, "port": port,
            "secret": secret, "run_id": run_id,
        }  # fmt: skip
        p = ctx.Process(target=_load_process, args=(cfg, barrier, results), name=f"bench-load-{index}")
        p.start()
        procs.append(p)
    try:
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
        cpu0 = {name: _tree_cpu_s(pid) for name, pid in pids.items()}
        wall0 = time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
        window = time.monotonic() - wall0
        cpu = {name: 100.0 * (_tree_cpu_s(pid) - cpu0[name]) / window for name, pid in pids.items()}
        gathered: list[dict[str, Any]] = []
        deadline = time.monotonic() + HTTP_TIMEOUT_S + 60
        while len(gathered) < nprocs and time.monotonic() < deadline:
            try:
                gathered.append(results.get(timeout=1.0))
            except queue.Empty:
                if all(p.exitcode is not None for p in procs):
                    break
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    failed = [g for g in gathered if "error" in g]
    if failed or len(gathered) < nprocs:
        raise RuntimeError(f"load generator failed: {failed or 'a process returned no result'}")
    total: dict[str, Any] = {
        "measured": Counter(),
        "everything": Counter(),
        "problems": Counter(),
        "transport": Counter(),
    }
    for g in gathered:
        for k, counts in total.items():
            counts.update(g[k])
    total["latencies"] = sorted(x for g in gathered for x in g["latencies"])
    total["unknown_keys"] = [k for g in gathered for k in g["unknown_keys"]]
    total["cpu_pct"] = cpu
    return total


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
        "latency_ms": {q: _percentile(lat, v) * 1000 for q, v in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))},
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
    cpu = "  ".join(f"{k} {v:.0f}%" for k, v in load["cpu_pct"].items())
    print(f"  server CPU    {cpu}  (% of one core)")
    print(
        f"  verify        {'OK' if verify['ok'] else 'FAILED'}: {verify['fulfilled']} fulfilled,"
        f" {verify['failed']} failed, {verify['burns']} burns, {verify['codes_issued']} codes issued,"
        f" stock left {verify['stock_left']}"
    )
    for name, passed in verify["checks"].items():
        if not passed:
            print(f"                FAILED: {name}")
    return result


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark POST /v1/redemptions on a throwaway catalog + ledger"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--members", type=int, default=1000, help="distinct members (default 1000)")
    parser.add_argument("--type", choices=("voucher", "physical", "service"), default="voucher")
    parser.add_argument("--stock", type=int, default=1_000_000, help="initial stock; -1 for unlimited")
    parser.add_argument("--codes", type=int, default=30_000, help="voucher codes to upload (default 30000)")
    parser.add_argument("--catalog-workers", type=int, default=1, help="uvicorn workers for the catalog")
    parser.add_argument("--ledger-workers", type=int, default=1, help="uvicorn workers for the ledger")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.members < 1:
        parser.error("--duration must be > 0, --clients and --members >= 1")

    from services.cli import spawn_service
    from services.migrate import upgrade
    from services.pg import EmbeddedPostgres
    from services.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="jifen-bench-catalog-"))
    pg = EmbeddedPostgres(data_dir / "pgdata", delete_on_stop=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        print(f"data dir {data_dir}; starting embedded PostgreSQL", flush=True)
        pg.start()
        pg.ensure_database("jifen")
        url = pg.url("jifen")
        upgrade(url)
        admin, service_key = asyncio.run(_create_keys(url))
        host = "127.0.0.1"
        ports = {"ledger": _free_port(host), "catalog": _free_port(host)}
        os.environ.update(
            JIFEN_ACCESS_LOG="false", JIFEN_HOST=host, JIFEN_DATA_DIR=str(data_dir),
            JIFEN_LEDGER_PORT=str(ports["ledger"]), JIFEN_CATALOG_PORT=str(ports["catalog"]),
        )  # fmt: skip
        os.environ.setdefault("JIFEN_LOG_LEVEL", "WARNING")
        settings = Settings(
            data_dir=data_dir,
            host=host,
            ledger_port=ports["ledger"],
            catalog_port=ports["catalog"],
            access_log=False,
        )
        urls = {name: f"http://{host}:{port}" for name, port in ports.items()}
        procs["ledger"] = spawn_service("ledger", settings, url, workers=args.ledger_workers)
        _wait_ready("ledger", urls["ledger"], procs["ledger"])
        procs["catalog"] = spawn_service(
            "catalog", settings, url, workers=args.catalog_workers, ledger_key=service_key
        )
        _wait_ready("catalog", urls["catalog"], procs["catalog"])
        print(f"funding {args.members} members and creating the reward", flush=True)
        stock = asyncio.run(_setup(args, urls["ledger"], urls["catalog"], admin))
        if args.type == "voucher" and stock is not None and args.codes < stock:
            print(f"note: {args.codes} codes < stock {stock}: codes may run out first (409 out_of_stock)")
        print(
            f"driving POST /v1/redemptions: {args.clients} clients, {args.warmup}s + {args.duration}s",
            flush=True,
        )
        pids = {name: p.pid for name, p in procs.items()} | {"postgres": _postmaster_pid(pg.pgdata)}
        load = _run_load(args, host, ports["catalog"], admin, pids)
        observed_201 = load["everything"].get(201, 0)
        verify = asyncio.run(_verify(url, observed_201, len(load["unknown_keys"]), stock))
        result = _report(args, load, verify)
        if args.json:
            print(json.dumps({"bench_catalog": result}, sort_keys=True, default=str))
        return 0 if verify["ok"] and observed_201 > 0 else 1
    finally:
        try:
            for name in ("catalog", "ledger"):
                _stop(procs.get(name))
        finally:
            try:
                pg.stop()
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopped the services and PostgreSQL", file=sys.stderr)
        sys.exit(130)
