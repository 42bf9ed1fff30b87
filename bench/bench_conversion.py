"""Load benchmark of conversions end to end: POST /v1/conversions on the conversion service, which debits
and credits the member through the ledger over HTTP, against a throwaway embedded PostgreSQL.

Run with `.venv/bin/python bench/bench_conversion.py --help`. The same approach as bench_ledger.py, standalone
(so either can change without breaking the other): it starts its own database, the ledger and the conversion service (uvicorn processes),
creates two programs and a rate, funds the members, drives POST /v1/conversions from C concurrent
keep-alive clients in separate load-generator processes, prints conversions per second and latency, then
checks the books: every 201 is a completed conversion with its two ledger legs, and nothing else moved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
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


class _TransportError(Exception):
    """The request's outcome is unknown: no (complete) response arrived."""


class _ConversionConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams (a few microseconds of CPU per request),
    speaking just enough HTTP for POST /v1/conversions: Content-Length or chunked responses."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST /v1/conversions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nIdempotency-Key: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def post(self, key: str, body: bytes) -> tuple[int, bytes]:
        request = b"".join(
            (self.head, key.encode(), b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        )
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                reader, writer = self.reader, self.writer
                assert reader is not None
                writer.write(request)
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
                    data = await self._read_chunked(reader)
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

    index, nprocs, members = cfg["index"], cfg["nprocs"], cfg["members"]
    warm_end = t0 + cfg["warmup"]
    end = warm_end + cfg["duration"]
    prefix = f"{cfg['run_id']}-{index}"
    latencies = array("d")
    measured: Counter[int] = Counter()
    everything: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    unknown_keys: list[str] = []
    sequence = itertools.count()
    cpu: dict[str, float] = {}
    conns: list[_ConversionConnection] = []

    async def one_client(cid: int) -> None:
        conn = _ConversionConnection(cfg["host"], cfg["port"], cfg["secret"])
        conns.append(conn)
        seq = 0
        while time.monotonic() < end:
            i = next(sequence) * nprocs + index
            body = orjson.dumps(
                {
                    "from_program": SRC,
                    "to_program": DST,
                    "member_ref": f"m-{i % members}",
                    "from_points": FROM_POINTS,
                }
            )
            key = f"{prefix}-{cid}-{seq}"
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
            if status != 201:
                try:
                    code = str(orjson.loads(data).get("code") or orjson.loads(data).get("state", "?"))
                except (orjson.JSONDecodeError, AttributeError):
                    code = "?"
                problems[f"{status} {code}"] += 1
            if warm_end <= finished <= end:
                measured[status] += 1
                if status == 201:
                    latencies.append(finished - started)

    async def cpu_sampler() -> None:
        await asyncio.sleep(max(0.0, warm_end - time.monotonic()))
        cpu_start, wall_start = time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu["cpu_s"] = time.process_time() - cpu_start
        cpu["wall_s"] = time.monotonic() - wall_start

    try:
        await asyncio.gather(cpu_sampler(), *(one_client(c) for c in range(cfg["clients"])))
    finally:
        for c in conns:
            c.close()
    return {
        "index": index,
        "clients": cfg["clients"],
        "latencies": latencies,
        "measured": dict(measured),
        "everything": dict(everything),
        "problems": dict(problems),
        "transport": dict(transport),
        "unknown_keys": unknown_keys,
        "cpu_s": cpu.get("cpu_s", 0.0),
        "wall_s": cpu.get("wall_s", 0.0),
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
        results.put({"index": cfg["index"], "error": repr(exc)})
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
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the {name} was not ready within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process, its live descendants and its reaped children."""
    if pid is None:
        return 0.0
    import psutil

    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        descendants = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for p in descendants:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]  # nearest rank


async def _keys(url: str) -> tuple[str, str]:
    """An admin key for the benchmark, and the conversion service's own ledger key."""
    from services.auth import SCOPES, create_api_key
    from services.db import Database
    from services.keyfiles import SERVICE_LEDGER_SCOPES

    db = Database(url, pool_size=1)
    try:
        _, admin = await create_api_key(db, name="bench-admin", scopes=SCOPES)
        _, service = await create_api_key(
            db, name="conversion-service", scopes=SERVICE_LEDGER_SCOPES["conversion"]
        )
        return admin, service
    finally:
        await db.dispose()


async def _setup(ledger_url: str, conversion_url: str, secret: str, members: int) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(headers=auth, timeout=60) as client:
        for code, cash in ((SRC, 100), (DST, 500)):
            body = {
                "code": code,
                "name": f"Benchmark {code}",
                "cash_value": {"points": 500, "cash_minor": cash, "currency": "CNY"},
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
    ctx = mp.get_context("spawn")
    nprocs = max(1, min(args.procs, args.clients))
    share = [args.clients // nprocs + (1 if i < args.clients % nprocs else 0) for i in range(nprocs)]
    barrier = ctx.Barrier(nprocs + 1)
    results: Any = ctx.Queue()
    run_id = uuid.uuid4().hex[:12]
    procs = []
    for index in range(nprocs):
        cfg = {
            "index": index,
            "nprocs": nprocs,
            "clients": share[index],
            "members": args.members,
            "warmup": args.warmup,
            "duration": args.duration,
            "host": host,
            "port": port,
            "secret": secret,
            "run_id": run_id,
        }
        p = ctx.Process(target=_load_process, args=(cfg, barrier, results), name=f"bench-load-{index}")
        p.start()
        procs.append(p)
    cpu: dict[str, float] = {}
    machine: dict[str, float] = {}
    try:
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
        import psutil

        cpu0 = {name: _tree_cpu_s(pid) for name, pid in args.pids.items()}
        psutil.cpu_percent(interval=None)
        wall0 = time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
        window = time.monotonic() - wall0
        cpu = {name: 100.0 * (_tree_cpu_s(pid) - cpu0[name]) / window for name, pid in args.pids.items()}
        machine = {"machine_cpu_pct": psutil.cpu_percent(interval=None), "load_avg_1m": os.getloadavg()[0]}
        gathered: list[dict[str, Any]] = []
        deadline = time.monotonic() + HTTP_TIMEOUT_S + 60
        while len(gathered) < nprocs and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                gathered.append(results.get(timeout=1.0))
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
    measured: Counter[int] = Counter()
    everything: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    for g in gathered:
        measured.update(g["measured"])
        everything.update(g["everything"])
        problems.update(g["problems"])
        transport.update(g["transport"])
    return {
        "nprocs": nprocs,
        "latencies": sorted(x for g in gathered for x in g["latencies"]),
        "measured": measured,
        "everything": everything,
        "problems": problems,
        "transport": transport,
        "unknown_keys": [k for g in gathered for k in g["unknown_keys"]],
        "cpu_pct": cpu,
        "machine": machine,
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
                    " WHERE state NOT IN ('completed', 'rejected', 'compensated', 'failed')"
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
                "SELECT state, count(*) AS n FROM conversion.conversions GROUP BY state"
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
               WHERE c.state = 'completed'"""
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
    ms = 1000.0
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
        "latency_ms": {
            "p50": _percentile(lat, 0.50) * ms,
            "p99": _percentile(lat, 0.99) * ms,
            "mean": (sum(lat) / len(lat) * ms) if lat else float("nan"),
            "max": (lat[-1] * ms) if lat else float("nan"),
        },
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
    cpu = "  ".join(f"{k} {v:.0f}%" for k, v in load["cpu_pct"].items())
    gen = " ".join(f"{v:.0f}%" for v in load["loadgen_cpu_pct"])
    print(f"  CPU           {cpu}  loadgen {gen}  (% of one core)")
    m = load["machine"]
    print(
        f"  machine       {m['machine_cpu_pct']:.0f}% of all {s['cpus']} cores busy, load average"
        f" {m['load_avg_1m']:.1f} (other work on the machine slows every process here)"
    )
    print(f"  verify        {'OK' if verify['ok'] else 'FAILED'}: states {verify['states']}")
    for name, passed in verify["checks"].items():
        if not passed:
            print(f"                FAILED: {name}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark POST /v1/conversions end to end")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first (default 2)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--members", type=int, default=500, help="distinct members (default 500)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per service (default 1)")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or min(args.clients, args.members, args.workers) < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --clients/--members/--workers >= 1")

    from services.cli import spawn_service
    from services.migrate import upgrade
    from services.pg import EmbeddedPostgres
    from services.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="jifen-bench-conv-"))
    pg = EmbeddedPostgres(data_dir / "pgdata", delete_on_stop=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        print(f"data dir {data_dir}; starting embedded PostgreSQL", flush=True)
        pg.start()
        pg.ensure_database("jifen")
        url = pg.url("jifen")
        upgrade(url)
        secret, service_key = asyncio.run(_keys(url))

        host = "127.0.0.1"
        ports = {"ledger": _free_port(host), "conversion": _free_port(host)}
        os.environ.update(
            JIFEN_ACCESS_LOG="false",
            JIFEN_HOST=host,
            JIFEN_DATA_DIR=str(data_dir),
            JIFEN_LEDGER_PORT=str(ports["ledger"]),
            JIFEN_CONVERSION_PORT=str(ports["conversion"]),
        )
        os.environ.setdefault("JIFEN_LOG_LEVEL", "WARNING")
        settings = Settings(
            data_dir=data_dir,
            host=host,
            ledger_port=ports["ledger"],
            conversion_port=ports["conversion"],
            access_log=False,
        )
        urls = {name: f"http://{host}:{port}" for name, port in ports.items()}
        for name in ("ledger", "conversion"):
            print(f"starting the {name} on {urls[name]} with {args.workers} worker(s)", flush=True)
            key = service_key if name == "conversion" else None
            procs[name] = spawn_service(name, settings, url, workers=args.workers, ledger_key=key)
            _wait_ready(name, urls[name], procs[name])
        print(f"creating programs {SRC} -> {DST}, a rate, and {args.members} funded members", flush=True)
        asyncio.run(_setup(urls["ledger"], urls["conversion"], secret, args.members))
        args.pids = {
            "conversion": procs["conversion"].pid,
            "ledger": procs["ledger"].pid,
            "postgres": _postmaster_pid(pg.pgdata),
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
        if args.json:
            print(json.dumps({"bench_conversion": result}, sort_keys=True, default=str))
        return 0 if verify["ok"] and result["conversions"] > 0 else 1
    finally:
        try:
            for proc in procs.values():
                _stop(proc)
        finally:
            try:
                pg.stop()
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt_in_main_thread(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt_in_main_thread)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopped the services and PostgreSQL", file=sys.stderr)
        sys.exit(130)
