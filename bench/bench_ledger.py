"""Load benchmark of the ledger's write path: POST /v1/earn against a throwaway embedded PostgreSQL.

Run with `make bench` or `.venv/bin/python bench/bench_ledger.py --help`. It starts its own database and
ledger (uvicorn, --workers N), drives /v1/earn from C concurrent keep-alive clients spread over several
load-generator processes, prints throughput and latency, then checks the ledger's books against the
responses it got: every 201 must be in the balances exactly once, and nothing else may be.
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
import threading
import time
import uuid
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

PROGRAM = "BENCH"
POINTS = 10
HTTP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------------
# Load generator (runs in its own OS processes; imports only what it needs)
# --------------------------------------------------------------------------------------------------


class _TransportError(Exception):
    """The request's outcome is unknown: no (complete) response arrived."""


class _RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a few microseconds of CPU per request.

    Enough HTTP for this one endpoint: a fixed request head, Content-Length or chunked responses.
    """

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST /v1/earn HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nIdempotency-Key: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def post(self, key: str, body: bytes) -> tuple[int, bool, bytes]:
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
                length, chunked, close, replayed = -1, False, False, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name, value = name.strip().lower(), value.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        chunked = b"chunked" in value
                    elif name == b"connection":
                        close = value == b"close"
                    elif name == b"idempotent-replayed":
                        replayed = value == b"true"
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
        return status, replayed, data


async def _drive(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    index: int = cfg["index"]
    nprocs: int = cfg["nprocs"]
    members: int = cfg["members"]
    warm_end = t0 + cfg["warmup"]
    end = warm_end + cfg["duration"]
    prefix = f"{cfg['run_id']}-{index}"

    latencies = array("d")  # seconds, for requests completed inside the measured window
    measured: Counter[int] = Counter()  # status -> count, measured window
    everything: Counter[int] = Counter()  # status -> count, warm-up + window + tail
    problems: Counter[str] = Counter()  # "status code" -> count, every non-2xx of the whole run
    transport: Counter[str] = Counter()  # exception name -> count, whole run
    unknown_keys: list[str] = []  # requests whose outcome the client never learnt
    replays = 0
    sequence = itertools.count()
    cpu: dict[str, float] = {}

    async with contextlib.AsyncExitStack() as stack:
        if cfg["client"] == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=cfg["clients"], max_keepalive_connections=cfg["clients"])
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=cfg["base_url"],
                    limits=limits,
                    timeout=HTTP_TIMEOUT_S,
                    headers={"Authorization": f"Bearer {cfg['secret']}", "Content-Type": "application/json"},
                )
            )

            def connect() -> Any:
                async def post(key: str, body: bytes) -> tuple[int, bool, bytes]:
                    try:
                        r = await client.post("/v1/earn", content=body, headers={"Idempotency-Key": key})
                    except httpx.HTTPError as exc:
                        raise _TransportError(type(exc).__name__) from exc
                    return r.status_code, r.headers.get("idempotent-replayed") == "true", r.content

                return post
        else:
            raws: list[_RawConnection] = []
            stack.callback(lambda: [c.close() for c in raws])

            def connect() -> Any:
                raws.append(_RawConnection(cfg["host"], cfg["port"], cfg["secret"]))
                return raws[-1].post

        async def one_client(cid: int) -> None:
            nonlocal replays
            post = connect()
            seq = 0
            while time.monotonic() < end:
                i = next(sequence) * nprocs + index
                body = orjson.dumps(
                    {"program": PROGRAM, "member_ref": f"m-{i % members}", "points": POINTS, "reference": "r"}
                )
                key = f"{prefix}-{cid}-{seq}"
                seq += 1
                started = time.monotonic()
                try:
                    status, replayed, data = await post(key, body)
                except _TransportError as exc:
                    transport[str(exc)] += 1
                    unknown_keys.append(key)
                    continue
                finished = time.monotonic()
                everything[status] += 1
                replays += replayed
                if not 200 <= status < 300:
                    try:
                        code = str(orjson.loads(data).get("code", "?"))
                    except (orjson.JSONDecodeError, AttributeError):
                        code = "?"
                    problems[f"{status} {code}"] += 1
                if warm_end <= finished <= end:
                    measured[status] += 1
                    latencies.append(finished - started)

        async def cpu_sampler() -> None:
            await asyncio.sleep(max(0.0, warm_end - time.monotonic()))
            cpu_start, wall_start = time.process_time(), time.monotonic()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu["cpu_s"] = time.process_time() - cpu_start
            cpu["wall_s"] = time.monotonic() - wall_start

        await asyncio.gather(cpu_sampler(), *(one_client(c) for c in range(cfg["clients"])))

    return {
        "index": index,
        "clients": cfg["clients"],
        "latencies": latencies,
        "measured": dict(measured),
        "everything": dict(everything),
        "problems": dict(problems),
        "transport": dict(transport),
        "unknown_keys": unknown_keys,
        "replays": replays,
        "cpu_s": cpu.get("cpu_s", 0.0),
        "wall_s": cpu.get("wall_s", 0.0),
    }


def _load_process(cfg: dict[str, Any], barrier: Any, results: Any) -> None:
    """Entry point of one load-generator process: wait for the others, then drive for the whole run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        import orjson  # noqa: F401  (imports before the barrier, so they do not eat into the warm-up)

        if cfg["client"] == "httpx":
            import httpx  # noqa: F401

        try:
            import uvloop

            run: Any = uvloop.run
        except ImportError:  # pragma: no cover
            run = asyncio.run
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        results.put(run(_drive(cfg, t0)))
    except BaseException as exc:
        results.put({"index": cfg["index"], "error": repr(exc)})
        raise


# --------------------------------------------------------------------------------------------------
# Orchestration (the parent process)
# --------------------------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the ledger exited with code {proc.returncode} before it became ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the ledger was not ready within {timeout_s:.0f}s")


async def _create_admin_key(url: str) -> tuple[int, str]:
    from services.auth import SCOPES, create_api_key
    from services.db import Database

    db = Database(url, pool_size=1)
    try:
        return await create_api_key(db, name="bench-admin", scopes=SCOPES)
    finally:
        await db.dispose()


def _create_program(base_url: str, secret: str) -> None:
    import httpx

    body = {
        "code": PROGRAM,
        "name": "Benchmark",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
    }
    r = httpx.post(
        f"{base_url}/v1/programs", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )
    if r.status_code != 201:
        raise RuntimeError(f"creating program {PROGRAM} failed: {r.status_code} {r.text}")


def _tree_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of a process, its live descendants and its reaped children.

    Reaped children matter: a PostgreSQL backend that exits (a closed pool connection) takes its CPU
    time with it unless it is counted through the postmaster's children_user / children_system.
    """
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


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))  # nearest-rank
    return sorted_values[rank - 1]


def _run_load(
    args: argparse.Namespace, host: str, port: int, secret: str, ledger_pid: int, pgdata: Path, url: str
) -> dict[str, Any]:
    base_url = f"http://{host}:{port}"
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
            "base_url": base_url,
            "host": host,
            "port": port,
            "client": args.client,
            "secret": secret,
            "run_id": run_id,
        }
        p = ctx.Process(target=_load_process, args=(cfg, barrier, results), name=f"bench-load-{index}")
        p.start()
        procs.append(p)

    import psutil

    try:
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            errors = []
            with contextlib.suppress(queue.Empty):
                while True:
                    errors.append(results.get(timeout=2.0).get("error"))
            raise RuntimeError(f"a load-generator process failed to start: {errors}") from None
        t0 = time.monotonic()
        # Server-side CPU over the measured window, so a reader can see who was busy.
        time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
        pg_pid = _postmaster_pid(pgdata)
        sessions0 = asyncio.run(_pg_sessions(url))
        ledger_cpu0, pg_cpu0 = _tree_cpu_s(ledger_pid), _tree_cpu_s(pg_pid)
        psutil.cpu_percent(interval=None)
        wall0 = time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
        machine_pct = psutil.cpu_percent(interval=None)
        window = time.monotonic() - wall0
        ledger_cpu = _tree_cpu_s(ledger_pid) - ledger_cpu0
        pg_cpu = _tree_cpu_s(pg_pid) - pg_cpu0
        sessions = asyncio.run(_pg_sessions(url)) - sessions0 - 1  # - 1: the first count's own session

        gathered: list[dict[str, Any]] = []
        deadline = time.monotonic() + HTTP_TIMEOUT_S + 60
        while len(gathered) < nprocs and time.monotonic() < deadline:
            try:
                gathered.append(results.get(timeout=1.0))
            except queue.Empty:
                if all(p.exitcode is not None for p in procs):
                    try:
                        gathered.append(results.get(timeout=2.0))
                    except queue.Empty:
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

    latencies = sorted(x for g in gathered for x in g["latencies"])
    measured: Counter[int] = Counter()
    everything: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    for g in gathered:
        measured.update(g["measured"])
        everything.update(g["everything"])
        problems.update(g["problems"])
        transport.update(g["transport"])
    completed = sum(measured.values())
    return {
        "nprocs": nprocs,
        "latencies": latencies,
        "completed": completed,
        "measured": measured,
        "everything": everything,
        "problems": problems,
        "transport": transport,
        "unknown_keys": [k for g in gathered for k in g["unknown_keys"]],
        "replays": sum(g["replays"] for g in gathered),
        "loadgen_cpu": [
            {
                "process": g["index"],
                "clients": g["clients"],
                "cpu_pct": 100.0 * g["cpu_s"] / g["wall_s"] if g["wall_s"] else float("nan"),
            }
            for g in sorted(gathered, key=lambda g: g["index"])
        ],
        "ledger_cpu_pct": 100.0 * ledger_cpu / window,
        "postgres_cpu_pct": 100.0 * pg_cpu / window,
        "machine_cpu_pct": machine_pct,
        "pg_sessions_opened": sessions,
    }


async def _pg_sessions(url: str) -> int:
    """Sessions ever opened on the database (pg_stat_database.sessions), not counting this one."""
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        n = await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()
    return int(n or 0) - 1


async def _verify(url: str, api_key_id: int, observed_201: int, unknown_keys: list[str]) -> dict[str, Any]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        prog = await conn.fetchrow(
            "SELECT id, issuance_account FROM ledger.programs WHERE code = $1", PROGRAM
        )
        assert prog is not None
        balances = await conn.fetchrow(
            "SELECT coalesce(sum(balance), 0) AS total, count(*) AS accounts,"
            " coalesce(sum(held), 0) AS held FROM ledger.accounts WHERE program_id = $1 AND kind = 'member'",
            prog["id"],
        )
        earns = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(points), 0) AS points FROM ledger.transactions"
            " WHERE program_id = $1 AND type = 'earn'",
            prog["id"],
        )
        postings = await conn.fetchrow(
            "SELECT coalesce(sum(p.amount), 0) AS net,"
            " coalesce(sum(p.amount) FILTER (WHERE p.account_id = $2), 0) AS issuance"
            " FROM ledger.postings p JOIN ledger.accounts a ON a.id = p.account_id WHERE a.program_id = $1",
            prog["id"],
            prog["issuance_account"],
        )
        resolved = 0
        if unknown_keys:
            resolved = await conn.fetchval(
                "SELECT count(*) FROM ledger.idempotency_keys"
                " WHERE api_key_id = $1 AND key = ANY($2::text[]) AND status = 201",
                api_key_id,
                unknown_keys,
            )
    finally:
        await conn.close()

    expected_201 = observed_201 + int(resolved)
    expected_points = POINTS * expected_201
    checks = {
        "member balances == 10 x 201s": int(balances["total"]) == expected_points,
        "earn transactions == 201s": int(earns["n"]) == expected_201,
        "postings net to zero": int(postings["net"]) == 0,
        "issuance account == -(member balances)": -int(postings["issuance"]) == int(balances["total"]),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "observed_201": observed_201,
        "unknown_outcome_requests": len(unknown_keys),
        "unknown_outcome_applied": int(resolved),
        "expected_points": expected_points,
        "member_balance_sum": int(balances["total"]),
        "member_accounts": int(balances["accounts"]),
        "earn_transactions": int(earns["n"]),
        "postings_net": int(postings["net"]),
    }


def _stop_ledger(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print("ledger did not stop within 20s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def _report(args: argparse.Namespace, load: dict[str, Any], verify: dict[str, Any]) -> dict[str, Any]:
    lat = load["latencies"]
    ms = 1000.0
    completed = load["completed"]
    ok_measured = sum(n for s, n in load["measured"].items() if 200 <= s < 300)
    errors_measured = {s: n for s, n in sorted(load["measured"].items()) if not 200 <= s < 300}
    errors_all = {s: n for s, n in sorted(load["everything"].items()) if not 200 <= s < 300}
    result = {
        "settings": {
            "clients": args.clients,
            "members": args.members,
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "loadgen_processes": load["nprocs"],
            "loadgen_client": args.client,
            "cpus": os.cpu_count(),
        },
        "requests": completed,
        "requests_per_s": completed / args.duration,
        "ok_per_s": ok_measured / args.duration,
        "latency_ms": {
            "p50": _percentile(lat, 0.50) * ms,
            "p99": _percentile(lat, 0.99) * ms,
            "p999": _percentile(lat, 0.999) * ms,
            "mean": (sum(lat) / len(lat) * ms) if lat else float("nan"),
            "max": (lat[-1] * ms) if lat else float("nan"),
        },
        "errors": sum(errors_measured.values()),
        "errors_by_status": {str(s): n for s, n in errors_measured.items()},
        "errors_whole_run_by_status": {str(s): n for s, n in errors_all.items()},
        "error_codes_whole_run": dict(load["problems"]),
        "transport_errors_whole_run": dict(load["transport"]),
        "replayed_responses": load["replays"],
        "cpu_pct": {
            "loadgen": load["loadgen_cpu"],
            "ledger": load["ledger_cpu_pct"],
            "postgres": load["postgres_cpu_pct"],
            "machine": load["machine_cpu_pct"],
        },
        "postgres_sessions_opened": load["pg_sessions_opened"],
        "verify": verify,
    }

    s = result["settings"]
    lm = result["latency_ms"]
    print()
    print(
        f"POST /v1/earn  clients={s['clients']} members={s['members']} workers={s['workers']}"
        f" duration={s['duration_s']}s (+{s['warmup_s']}s warm-up)"
        f" loadgen={s['loadgen_processes']}x{s['loadgen_client']} cpus={s['cpus']}"
    )
    print(f"  requests      {completed} in {args.duration}s")
    print(f"  requests/s    {result['requests_per_s']:.1f}  (2xx/s {result['ok_per_s']:.1f})")
    print(
        f"  latency ms    p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  p999 {lm['p999']:.2f}"
        f"  (mean {lm['mean']:.2f}, max {lm['max']:.2f})"
    )
    by_status = ", ".join(f"{k}: {v}" for k, v in result["errors_by_status"].items()) or "none"
    print(f"  errors        {result['errors']}  ({by_status})")
    if result["errors_whole_run_by_status"] or result["transport_errors_whole_run"]:
        print(f"  whole run     non-2xx {result['error_codes_whole_run']}")
        print(f"                transport {result['transport_errors_whole_run']}")
    if result["replayed_responses"]:
        print(f"  replayed      {result['replayed_responses']} (unexpected: every key is unique)")
    gen = "  ".join(f"#{g['process']} {g['cpu_pct']:.0f}%" for g in load["loadgen_cpu"])
    print(f"  loadgen CPU   {gen}  (% of one core, process_time / wall time over the window)")
    print(
        f"  server CPU    ledger {load['ledger_cpu_pct']:.0f}%  postgres {load['postgres_cpu_pct']:.0f}%"
        f"  (% of one core); machine {load['machine_cpu_pct']:.0f}% of all {s['cpus']} cores"
    )
    print(
        f"  pg sessions   {load['pg_sessions_opened']} opened in the window (new database connections;"
        " a pool that holds its connections opens none after the warm-up; counts lag up to ~1s)"
    )
    v = verify
    print(
        f"  verify        {'OK' if v['ok'] else 'FAILED'}: member balances {v['member_balance_sum']}"
        f" = {POINTS} x {v['observed_201'] + v['unknown_outcome_applied']} 201s"
        f" (expected {v['expected_points']}); {v['member_accounts']} member accounts;"
        f" {v['earn_transactions']} earn transactions"
    )
    if v["unknown_outcome_requests"]:
        print(
            f"                {v['unknown_outcome_requests']} requests got no response;"
            f" {v['unknown_outcome_applied']} of them were applied (found by Idempotency-Key)"
        )
    for name, passed in v["checks"].items():
        if not passed:
            print(f"                FAILED: {name}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark POST /v1/earn on a throwaway ledger")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first (default 2)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--members", type=int, default=10_000, help="distinct members (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers for the ledger (default 2)")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load-generator HTTP client: raw keep-alive HTTP/1.1 on asyncio streams (default; cheap)"
        " or httpx.AsyncClient (tens of times the CPU per request)",
    )
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.clients < 1 or args.members < 1 or args.workers < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --clients/--members/--workers >= 1")

    from services.cli import spawn_service
    from services.migrate import upgrade
    from services.pg import EmbeddedPostgres
    from services.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="jifen-bench-"))
    pg = EmbeddedPostgres(data_dir / "pgdata", delete_on_stop=True)
    ledger: subprocess.Popen[bytes] | None = None
    try:
        print(f"data dir {data_dir}; starting embedded PostgreSQL", flush=True)
        pg.start()
        pg.ensure_database("jifen")
        url = pg.url("jifen")
        upgrade(url)
        api_key_id, secret = asyncio.run(_create_admin_key(url))

        host = "127.0.0.1"
        port = _free_port(host)
        # spawn_service passes only DATABASE_URL (and the port on the command line) to the child;
        # everything else the app reads from its own environment.
        os.environ["JIFEN_ACCESS_LOG"] = "false"
        os.environ["JIFEN_LEDGER_PORT"] = str(port)
        os.environ["JIFEN_HOST"] = host
        os.environ["JIFEN_DATA_DIR"] = str(data_dir)
        os.environ.setdefault("JIFEN_LOG_LEVEL", "WARNING")
        settings = Settings(data_dir=data_dir, host=host, ledger_port=port, access_log=False)
        base_url = f"http://{host}:{port}"
        print(f"starting the ledger on {base_url} with {args.workers} worker(s)", flush=True)
        ledger = spawn_service("ledger", settings, url, workers=args.workers)
        _wait_ready(base_url, ledger)
        _create_program(base_url, secret)

        print(
            f"driving POST /v1/earn: {args.clients} clients, {args.warmup}s warm-up + {args.duration}s",
            flush=True,
        )
        load = _run_load(args, host, port, secret, ledger.pid, pg.pgdata, url)
        if ledger.poll() is not None:
            print(f"warning: the ledger exited during the run (code {ledger.returncode})", file=sys.stderr)
        observed_201 = load["everything"].get(201, 0)
        verify = asyncio.run(_verify(url, api_key_id, observed_201, load["unknown_keys"]))
        result = _report(args, load, verify)
        if args.json:
            print(json.dumps({"bench_ledger": result}, sort_keys=True))
        return 0 if verify["ok"] and load["completed"] > 0 else 1
    finally:
        try:
            _stop_ledger(ledger)
        finally:
            try:
                pg.stop()
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt_in_main_thread(*_: object) -> None:  # SIGTERM -> KeyboardInterrupt, so `finally` runs
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt_in_main_thread)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopped the ledger and PostgreSQL", file=sys.stderr)
        sys.exit(130)
