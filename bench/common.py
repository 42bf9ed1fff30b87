"""What the benchmark scripts share: a throwaway embedded PostgreSQL with migrations and API keys,
services spawned as uvicorn processes, a raw asyncio HTTP/1.1 load generator run in separate OS
processes, CPU and memory sampling, latency percentiles and report helpers.

The scripts run as `.venv/bin/python bench/<name>.py`, so `bench/` is on sys.path and they
`import common`; the load-generator processes (spawned, not forked) find it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import math
import multiprocessing as mp
import os
import queue
import resource
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

# --------------------------------------------------------------------------------------------------
# Load generator (runs in its own OS processes; imports only what it needs)
# --------------------------------------------------------------------------------------------------

# request(method, path, idempotency key or None, body or None) -> (status, replayed, body)
Request = Callable[[str, str, str | None, bytes | None], Awaitable[tuple[int, bool, bytes]]]
# call(label or None, method, path, key, body) -> (status, body), or None when no response arrived
Call = Callable[[str | None, str, str, str | None, bytes | None], Awaitable[tuple[int, bytes] | None]]


class TransportError(Exception):
    """The request's outcome is unknown: no (complete) response arrived."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a few microseconds of CPU per request.

    Enough HTTP for these endpoints: a fixed set of request headers, Content-Length or chunked responses.
    """

    def __init__(self, host: str, port: int, secret: str, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.common = f"Host: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def request(
        self, method: str, path: str, key: str | None, body: bytes | None
    ) -> tuple[int, bool, bytes]:
        head = [method.encode(), b" ", path.encode(), b" HTTP/1.1\r\n", self.common]
        if key is not None:
            head += [b"Idempotency-Key: ", key.encode(), b"\r\n"]
        if body is not None:
            head += [b"Content-Type: application/json\r\nContent-Length: ", str(len(body)).encode(), b"\r\n"]
        head.append(b"\r\n")
        if body:
            head.append(body)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                reader, writer = self.reader, self.writer
                assert reader is not None
                writer.write(b"".join(head))
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
            raise TransportError(type(exc).__name__) from exc
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, replayed, data


def error_code(status: int, data: bytes) -> str | None:
    """None for a 2xx; otherwise the `code` of the JSON error body ("?" when there is none)."""
    if 200 <= status < 300:
        return None
    import orjson

    try:
        return str(orjson.loads(data).get("code", "?"))
    except (orjson.JSONDecodeError, AttributeError):
        return "?"


async def drive_clients(
    cfg: dict[str, Any],
    t0: float,
    prepare: Callable[[int], Any],
    operation: Callable[[Call, str, Any], Awaitable[int | None]],
    *,
    timeout_s: float,
    connect: Callable[[], Request] | None = None,
    problem_code: Callable[[int, bytes], str | None] = error_code,
    latency_status: int | None = None,
    count_no_response: bool = False,
    pause_after_no_response: float = 0.0,
) -> dict[str, Any]:
    """Runs cfg["clients"] concurrent clients from t0 to the end of warm-up + duration.

    Each client repeats one operation: `prepare(i)` (not timed; i = 0, 1, ... spread over the
    processes) and then `operation(call, idempotency_key, prepared)` (timed), which makes its requests
    with `call` and returns the operation's status, or None when a request got no response.
    `call(label, ...)` counts every response and problem; with label None the counters are keyed by the
    status alone, otherwise by "label status". Operations that end inside the measured window count in
    `measured` (with `count_no_response`, no response counts as status 0) and their latency is kept
    (only for `latency_status` when given). Connections are RawConnections unless `connect` is given.
    """
    index, nprocs = cfg["index"], cfg["nprocs"]
    warm_end = t0 + cfg["warmup"]
    end = warm_end + cfg["duration"]
    prefix = f"{cfg['run_id']}-{index}"

    latencies = array("d")  # seconds, for operations completed inside the measured window
    measured: Counter[int] = Counter()  # operation outcome (status; 0 = no response) -> count, window
    everything: Counter[Any] = Counter()  # [label] status -> count, warm-up + window + tail
    problems: Counter[str] = Counter()  # "[label] status code" -> count, every problem of the whole run
    transport: Counter[str] = Counter()  # "[label] exception" -> count, whole run
    unknown_keys: list[Any] = []  # key, or (label, key), of requests whose outcome the client never learnt
    replays = 0
    sequence = itertools.count()
    cpu: dict[str, float] = {}
    raws: list[RawConnection] = []

    def raw_connect() -> Request:
        raws.append(RawConnection(cfg["host"], cfg["port"], cfg["secret"], timeout_s))
        return raws[-1].request

    def bind(request: Request) -> Call:
        async def call(
            label: str | None, method: str, path: str, key: str | None, body: bytes | None
        ) -> tuple[int, bytes] | None:
            nonlocal replays
            try:
                status, replayed, data = await request(method, path, key, body)
            except TransportError as exc:
                transport[str(exc) if label is None else f"{label} {exc}"] += 1
                if key is not None:
                    unknown_keys.append(key if label is None else (label, key))
                return None
            everything[status if label is None else f"{label} {status}"] += 1
            replays += replayed
            code = problem_code(status, data)
            if code is not None:
                problems[f"{status} {code}" if label is None else f"{label} {status} {code}"] += 1
            return status, data

        return call

    async def one_client(cid: int) -> None:
        call = bind((connect or raw_connect)())
        seq = 0
        while time.monotonic() < end:
            prepared = prepare(next(sequence) * nprocs + index)
            key = f"{prefix}-{cid}-{seq}"
            seq += 1
            started = time.monotonic()
            status = await operation(call, key, prepared)
            finished = time.monotonic()
            if status is None and not count_no_response:
                continue
            if warm_end <= finished <= end:
                measured[0 if status is None else status] += 1
                if status is not None and (latency_status is None or status == latency_status):
                    latencies.append(finished - started)
            if status is None and pause_after_no_response:
                await asyncio.sleep(pause_after_no_response)  # no hot loop against a server that is gone

    async def cpu_sampler() -> None:
        await asyncio.sleep(max(0.0, warm_end - time.monotonic()))
        cpu_start, wall_start = time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu["cpu_s"] = time.process_time() - cpu_start
        cpu["wall_s"] = time.monotonic() - wall_start

    try:
        await asyncio.gather(cpu_sampler(), *(one_client(c) for c in range(cfg["clients"])))
    finally:
        for c in raws:
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
        "replays": replays,
        "cpu_s": cpu.get("cpu_s", 0.0),
        "wall_s": cpu.get("wall_s", 0.0),
    }


def load_process(
    drive: Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]],
    cfg: dict[str, Any],
    barrier: Any,
    results: Any,
) -> None:
    """Entry point of one load-generator process: wait for the others, then drive for the whole run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        import orjson  # noqa: F401  (imports before the barrier, so they do not eat into the warm-up)

        for module in cfg.get("preload", ()):
            importlib.import_module(module)
        try:
            import uvloop

            run: Any = uvloop.run
        except ImportError:  # pragma: no cover
            run = asyncio.run
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        results.put(run(drive(cfg, t0)))
    except BaseException as exc:
        results.put({"index": cfg["index"], "error": repr(exc)})
        raise


def run_load(
    drive: Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]],
    cfg: dict[str, Any],
    *,
    clients: int,
    procs: int,
    warmup: float,
    duration: float,
    timeout_s: float,
    pids: dict[str, int | None],
    hook: Callable[[], Any] | None = None,
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Spreads `clients` over up to `procs` spawned processes running `drive(cfg, t0)` (a module-level
    function, so it can be pickled), measures the window (see measure_window) and returns
    (processes, their results, the window). Raises if any process failed."""
    ctx = mp.get_context("spawn")
    nprocs = max(1, min(procs, clients))
    share = [clients // nprocs + (1 if i < clients % nprocs else 0) for i in range(nprocs)]
    barrier = ctx.Barrier(nprocs + 1)
    results: Any = ctx.Queue()
    run_id = uuid.uuid4().hex[:12]
    processes = []
    for index in range(nprocs):
        each = {"index": index, "nprocs": nprocs, "clients": share[index], "warmup": warmup,
                "duration": duration, "run_id": run_id, **cfg}  # fmt: skip
        p = ctx.Process(target=load_process, args=(drive, each, barrier, results), name=f"bench-load-{index}")
        p.start()
        processes.append(p)
    gathered: list[dict[str, Any]] = []
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
        window = measure_window(t0, warmup, duration, pids, hook)
        deadline = time.monotonic() + timeout_s + 60
        while len(gathered) < nprocs and time.monotonic() < deadline:
            try:
                gathered.append(results.get(timeout=1.0))
            except queue.Empty:
                if all(p.exitcode is not None for p in processes):
                    try:
                        gathered.append(results.get(timeout=2.0))
                    except queue.Empty:
                        break
        for p in processes:
            p.join(timeout=10)
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    failed = [g for g in gathered if "error" in g]
    if failed or len(gathered) < nprocs:
        raise RuntimeError(f"load generator failed: {failed or 'a process returned no result'}")
    return nprocs, gathered, window


def merge_results(gathered: list[dict[str, Any]]) -> dict[str, Any]:
    """The load-generator processes' results as one: sorted latencies, summed counters, all unknown keys."""
    merged: dict[str, Any] = {"latencies": sorted(x for g in gathered for x in g["latencies"])}
    for name in ("measured", "everything", "problems", "transport"):
        counts: Counter[Any] = Counter()
        for g in gathered:
            counts.update(g[name])
        merged[name] = counts
    merged["unknown_keys"] = [k for g in gathered for k in g["unknown_keys"]]
    return merged


# --------------------------------------------------------------------------------------------------
# CPU and memory
# --------------------------------------------------------------------------------------------------


def tree_cpu_s(pid: int | None) -> float:
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
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return float(total)


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def measure_window(
    t0: float,
    warmup: float,
    duration: float,
    pids: dict[str, int | None],
    hook: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Waits out the warm-up and the measured window after t0. Returns the CPU of each process tree in
    `pids` over the window (% of one core), the machine's CPU (% of all cores), the 1-minute load
    average, and what `hook` returned just before and just after the window ("before", "after")."""
    import psutil

    sleep_until(t0 + warmup)
    before = hook() if hook is not None else None
    cpu0 = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    psutil.cpu_percent(interval=None)
    wall0 = time.monotonic()
    sleep_until(t0 + warmup + duration)
    machine = psutil.cpu_percent(interval=None)
    seconds = time.monotonic() - wall0
    cpu = {name: 100.0 * (tree_cpu_s(pid) - cpu0[name]) / seconds for name, pid in pids.items()}
    after = hook() if hook is not None else None
    return {"cpu_pct": cpu, "machine_cpu_pct": machine, "load_avg_1m": os.getloadavg()[0],
            "before": before, "after": after}  # fmt: skip


class PeakSampler(threading.Thread):
    """A daemon thread that calls `sample()` every `interval_s` and keeps the largest value it yields in
    `peak`; a psutil error (a process gone) ends that sample. Set `stop` to end it."""

    def __init__(self, sample: Callable[[], Iterable[int]], interval_s: float) -> None:
        super().__init__(daemon=True)
        self.sample, self.interval_s = sample, interval_s
        self.peak = 0
        self.stop = False

    def run(self) -> None:
        import psutil

        while not self.stop:
            try:
                for value in self.sample():
                    self.peak = max(self.peak, value)
            except psutil.Error:
                pass
            time.sleep(self.interval_s)


# --------------------------------------------------------------------------------------------------
# Database, keys and services
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_postgres(prefix: str) -> Iterator[tuple[Any, Path, str]]:
    """A fresh data dir and an embedded PostgreSQL in it with database `jifen` (not migrated):
    yields (server, data dir, database URL); stops the server and deletes the data dir on exit."""
    from services.pg import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(data_dir / "pgdata", delete_on_stop=True)
    try:
        print(f"data dir {data_dir}; starting embedded PostgreSQL", flush=True)
        pg.start()
        pg.ensure_database("jifen")
        yield pg, data_dir, pg.url("jifen")
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def program_accounts_sql(code: str) -> str:
    """SQL for the system accounts of program `code` (inserted before) and the program's links to them,
    as the ledger's own create_program makes them: for scripts that load data set-based."""
    return f"""
INSERT INTO ledger.accounts (program_id, kind, member_ref)
SELECT p.id, k, '' FROM ledger.programs p,
    unnest(ARRAY['issuance', 'redemption', 'breakage', 'conversion', 'merchant', 'adjustment']) k
WHERE p.code = '{code}';
UPDATE ledger.programs p SET
    issuance_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'issuance'),
    redemption_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'redemption'),
    breakage_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'breakage'),
    conversion_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'conversion'),
    merchant_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'merchant'),
    adjustment_account = (SELECT id FROM ledger.accounts WHERE program_id = p.id AND kind = 'adjustment')
WHERE p.code = '{code}';
"""


@contextlib.asynccontextmanager
async def migrated_database(prefix: str, *, pool_size: int = 2) -> AsyncIterator[Any]:
    """A throwaway embedded PostgreSQL (see throwaway_postgres), migrated to head: yields a
    services.db.Database on it. The caller disposes of the pool when it wants its connections gone."""
    from services.db import Database
    from services.migrate import upgrade

    with throwaway_postgres(prefix) as (_, _, url):
        await asyncio.to_thread(upgrade, url)
        yield Database(url, pool_size=pool_size)


async def load_sql(db: Any, sql: str, **sizes: int) -> int:
    """Runs a loading script whose `{name}` placeholders are filled from `sizes`; returns the pid of
    the PostgreSQL backend that ran it (for BackendMemory)."""
    for name, value in sizes.items():
        sql = sql.replace("{" + name + "}", str(value))
    async with db.driver() as conn:
        await conn.execute(sql)
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


def anon_bytes(pid: int) -> int:
    """RssAnon of a process (Linux), in bytes; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class BackendMemory:
    """The peak memory of this process and of one PostgreSQL backend while a step runs: start() and
    stop() around it, then report(). A backend's is its largest anonymous (heap) memory, RssAnon from
    /proc: USS or RSS would also count pages of the shared buffers that the backend happened to touch."""

    def __init__(self, backend_pid: int) -> None:
        import psutil

        postmaster = psutil.Process(backend_pid).parent()
        assert postmaster is not None
        self.sampler = PeakSampler(
            lambda: (anon_bytes(c.pid) for c in postmaster.children(recursive=True)), 0.1
        )
        self.rss_before = self.rss_after = 0

    def start(self) -> None:
        self.sampler.start()
        self.rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> None:
        self.sampler.stop = True
        self.rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def report(self, during: str) -> None:
        print(
            f"peak RSS of this process: {self.rss_before / 1024:.0f} MiB before, {self.rss_after / 1024:.0f} MiB after"
        )
        print(
            f"peak heap memory (RssAnon) of one PostgreSQL process during {during}: {self.sampler.peak / 2**20:.0f} MiB"
        )


async def create_api_keys(
    url: str, *, admin_name: str = "bench-admin", service: str | None = None
) -> tuple[int, str, str | None]:
    """An admin key (all scopes) and, for `service`, that service's own ledger key named
    "<service>-service": (admin key id, admin secret, service secret or None)."""
    from services.auth import SCOPES, create_api_key
    from services.db import Database
    from services.keyfiles import SERVICE_LEDGER_SCOPES

    db = Database(url, pool_size=1)
    try:
        admin_id, admin = await create_api_key(db, name=admin_name, scopes=SCOPES)
        service_secret = None
        if service is not None:
            _, service_secret = await create_api_key(
                db, name=f"{service}-service", scopes=SERVICE_LEDGER_SCOPES[service]
            )
        return admin_id, admin, service_secret
    finally:
        await db.dispose()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def service_settings(data_dir: Path, host: str, ports: dict[str, int]) -> Any:
    """Settings for services on `ports` ({"ledger": port, ...}). spawn_service passes DATABASE_URL (and
    the port on the command line) to the child; everything else the app reads from its own environment,
    which it inherits from ours, so that is set here too."""
    from services.settings import Settings

    os.environ.update(
        JIFEN_ACCESS_LOG="false",
        JIFEN_HOST=host,
        JIFEN_DATA_DIR=str(data_dir),
        **{f"JIFEN_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    os.environ.setdefault("JIFEN_LOG_LEVEL", "WARNING")
    # The ports are in the environment just set: pydantic-settings reads them from there.
    return Settings(data_dir=data_dir, host=host, access_log=False)


def loopback_services(data_dir: Path, host: str, *names: str) -> tuple[Any, dict[str, int], dict[str, str]]:
    """The named services each on a free port of `host`: their settings, ports and base URLs by name."""
    ports = {name: free_port(host) for name in names}
    urls = {name: f"http://{host}:{port}" for name, port in ports.items()}
    return service_settings(data_dir, host, ports), ports, urls


def wait_ready(name: str, base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    from services.cli import wait_ready as poll_ready

    if poll_ready(base_url, proc, timeout_s=timeout_s):
        return
    if proc.poll() is not None:
        raise RuntimeError(f"the {name} exited with code {proc.returncode} before it became ready")
    raise RuntimeError(f"the {name} was not ready within {timeout_s:.0f}s")


def start_service(
    name: str, settings: Any, url: str, *, workers: int, ledger_key: str | None = None
) -> subprocess.Popen[bytes]:
    """Spawns the service as uvicorn processes (as `jifen run` does) and waits for its /readyz;
    stops it again if it does not get ready."""
    from services.cli import spawn_service

    proc = spawn_service(name, settings, url, workers=workers, ledger_key=ledger_key)
    try:
        wait_ready(name, f"http://{settings.host}:{settings.service_port(name)}", proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_stack(
    service: str, data_dir: Path, url: str, workers: dict[str, int], procs: dict[str, subprocess.Popen[bytes]]
) -> tuple[str, str, dict[str, int], dict[str, str]]:
    """Migrates the throwaway database and starts the ledger, then `service` with its own ledger key,
    on loopback ports; each process goes into `procs` as it starts, for the caller to stop.
    Returns the admin secret, the host, and the ports and base URLs by service."""
    from services.migrate import upgrade

    upgrade(url)
    _, admin, service_key = asyncio.run(create_api_keys(url, service=service))
    host = "127.0.0.1"
    settings, ports, urls = loopback_services(data_dir, host, "ledger", service)
    for name in ("ledger", service):
        print(f"starting the {name} on {urls[name]} with {workers[name]} worker(s)", flush=True)
        key = service_key if name == service else None
        procs[name] = start_service(name, settings, url, workers=workers[name], ledger_key=key)
    return admin, host, ports, urls


def stop_process(proc: subprocess.Popen[bytes] | None, name: str | None = None) -> None:
    """SIGTERM, then SIGKILL after 20s (said on stderr when `name` is given)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        if name is not None:
            print(f"{name} did not stop within 20s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------

QUANTILES = {"p50": 0.50, "p99": 0.99, "p999": 0.999}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))  # nearest-rank
    return float(sorted_values[rank - 1])


def latency_ms(sorted_s: list[float], *quantiles: str, mean_max: bool = True) -> dict[str, float]:
    """Milliseconds: the named quantiles ("p50", "p99", "p999") of sorted seconds, then mean and max."""
    ms = 1000.0
    result = {q: percentile(sorted_s, QUANTILES[q]) * ms for q in quantiles}
    if mean_max:
        result["mean"] = (sum(sorted_s) / len(sorted_s) * ms) if sorted_s else float("nan")
        result["max"] = (sorted_s[-1] * ms) if sorted_s else float("nan")
    return result


def cpu_text(cpu_pct: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.0f}%" for k, v in cpu_pct.items())


def print_failed_checks(checks: dict[str, bool]) -> None:
    for name, passed in checks.items():
        if not passed:
            print(f"                FAILED: {name}")


def _interrupt(*_: object) -> None:  # SIGTERM -> KeyboardInterrupt, so `finally` runs
    raise KeyboardInterrupt


def run_main(main: Callable[[], int], stopped: str) -> NoReturn:
    """Runs a benchmark's main() as the program; on SIGTERM or Ctrl-C its `finally` blocks still run."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"interrupted; stopped {stopped}", file=sys.stderr)
        sys.exit(130)


def add_load_arguments(parser: argparse.ArgumentParser, *, clients: int, members: int, procs: int) -> None:
    """The arguments every HTTP load benchmark takes, with its own defaults."""
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first (default 2)")
    parser.add_argument(
        "--clients", type=int, default=clients, help=f"concurrent clients (default {clients})"
    )
    parser.add_argument("--members", type=int, default=members, help=f"distinct members (default {members})")
    parser.add_argument(
        "--procs", type=int, default=procs, help=f"load-generator processes (default {procs})"
    )
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
