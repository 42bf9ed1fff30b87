"""Card-issuer batch accrual, end to end (issue 4): a synthetic file of N rows (default 1,000,000)
uploaded to a running ledger over HTTP and posted; prints rows/s, time to completion, the ledger's
peak memory, and, on the same file and server, a plain COPY into an unindexed table (the
machine's limit), so the ratio is visible.

    .venv/bin/python bench/bench_batch.py [--rows 1000000] [--workers 1] [--processors 1,2]

`--processors` lists the batch workers to measure (each posts member partitions of the batch on its
own PostgreSQL connection): one fresh database and ledger per count, rows/s for each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
from common import PeakSampler, create_api_keys, free_port, wait_ready

from ledger_service.batches.synthetic import RULES, rows
from ledger_service.cli import upload_file
from services.cli import spawn_service
from services.db import asyncpg_dsn
from services.migrate import upgrade
from services.pg import EmbeddedPostgres
from services.settings import Settings


async def plain_copy(url: str, path: Path) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (external_id text, type text,"
            " original_external_id text, program text, card_number text, member_ref text,"
            " amount_minor bigint, currency text, merchant_id text, mcc text, channel text,"
            " occurred_at timestamptz, points bigint)"
        )
        clean = path.with_suffix(".clean.csv")  # COPY stops at the first malformed line; drop them first
        with path.open() as src, clean.open("w") as dst:
            dst.writelines(line for line in src if line.count(",") == 12)
        started = time.perf_counter()
        with clean.open("rb") as f:
            await conn.copy_to_table("bench_copy", source=f, format="csv", header=True)
        return time.perf_counter() - started
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jifen-bench-batch-"))
    path = tmp / "batch.csv"
    started = time.perf_counter()
    with path.open("w") as f:
        for line in rows(args.rows, program="BOC", seed=7):
            f.write(line + "\n")
    print(
        f"generated {args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s"
    )
    rates = {}
    for n in args.processors:
        print(f"-- {n} batch worker(s), {args.partitions} partitions")
        rates[n] = run(args, tmp / f"p{n}", path, n)
    if len(rates) > 1:
        base = rates[args.processors[0]]
        print(
            "rows/s by batch workers: "
            + ", ".join(f"{n}: {r:,.0f} ({r / base:.2f}x)" for n, r in rates.items())
        )


class CpuShare:
    """CPU seconds over a run: the machine's, and of each of this benchmark's parts (itself, the
    ledger, the PostgreSQL server with its backends); the rest is other work on a shared machine."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.machine = self._machine()
        self.start = self._parts()

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))

    def _parts(self) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        for name, root in self.roots.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(root)
                kids = p.children(recursive=True) if name != "bench" else []
                for q in (p, *kids):
                    with contextlib.suppress(psutil.Error):
                        t = q.cpu_times()
                        out[(name, q.pid)] = t.user + t.system
        return out

    def report(self, elapsed: float, rows: int) -> str:
        machine = self._machine() - self.machine
        used: dict[str, float] = dict.fromkeys(self.roots, 0.0)
        for (name, pid), v in self._parts().items():
            used[name] += v - self.start.get((name, pid), 0.0)
        mine = sum(used.values())
        parts = ", ".join(f"{k} {v:.1f} s ({v * 1e6 / rows:.0f} us/row)" for k, v in used.items())
        return (
            f"CPU over the run: {parts}; this benchmark {mine / elapsed:.0%} of a core,"
            f" other processes {max(machine - mine, 0) / elapsed:.0%} (of {psutil.cpu_count()} cores)"
        )


def run(args: argparse.Namespace, tmp: Path, path: Path, processors: int) -> float:
    server = EmbeddedPostgres(tmp / "pgdata", delete_on_stop=True)
    server.start()
    ledger = None
    try:
        server.ensure_database("jifen")
        url = server.url("jifen")
        upgrade(url)
        port = free_port()
        os.environ.update(
            JIFEN_ACCESS_LOG="false",
            JIFEN_LEDGER_PORT=str(port),
            JIFEN_LOG_LEVEL="WARNING",
            JIFEN_BATCH_WORKERS=str(processors),
            JIFEN_BATCH_PARTITIONS=str(args.partitions),
        )
        settings = Settings(data_dir=tmp / "data", ledger_port=port)

        _, key, _ = asyncio.run(create_api_keys(url, admin_name="bench"))
        ledger = spawn_service("ledger", settings, url, workers=args.workers)
        base = f"http://127.0.0.1:{port}"
        wait_ready("ledger", base, ledger)
        auth = {"Authorization": f"Bearer {key}"}
        httpx.post(
            f"{base}/v1/programs",
            headers=auth,
            json={
                "code": "BOC",
                "name": "Bank of China",
                "cash_value": {"points": 1000, "cash_minor": 100, "currency": "CNY"},
                "expiry": {"policy": "rolling", "months": 24},
            },
        ).raise_for_status()
        httpx.post(f"{base}/v1/programs/BOC/rules", headers=auth, json=RULES).raise_for_status()
        proc = psutil.Process(ledger.pid)
        sampler = PeakSampler(  # the ledger's processes together (RSS)
            lambda: [proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))], 0.2
        )
        sampler.start()
        rss_idle = proc.memory_info().rss
        postmaster = int((tmp / "pgdata" / "postmaster.pid").read_text().split()[0])
        cpu = CpuShare({"bench": os.getpid(), "ledger": ledger.pid, "postgres": postmaster})
        started = time.perf_counter()
        batch = upload_file(path, base, key, quiet=not args.progress)
        elapsed = time.perf_counter() - started
        sampler.stop = True
        cpu_line = cpu.report(elapsed, args.rows)
        copy_s = asyncio.run(plain_copy(url, path))
        rate = args.rows / elapsed
        print(
            f"batch: {batch['status']}; posted {batch['posted']:,}, duplicates {batch['duplicates']:,}, "
            f"rejected {batch['rejected']:,}, points {batch['points_posted']:,}"
        )
        print(f"end to end: {elapsed:.1f} s, {rate:,.0f} rows/s (target 25,000 rows/s, issue 17)")
        print(
            f"ledger memory: {rss_idle / 2**20:.0f} MiB idle, peak {sampler.peak / 2**20:.0f} MiB during the batch"
        )
        print(
            f"plain COPY of the same file into an unindexed table: {copy_s:.1f} s, {args.rows / copy_s:,.0f} rows/s;"
            f" batch / COPY time = {elapsed / copy_s:.1f}x"
        )
        print(cpu_line)
        return float(rate)
    finally:
        if ledger is not None:
            ledger.terminate()
            ledger.wait(20)
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the ledger")
    parser.add_argument(
        "--processors",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="batch workers to measure, comma-separated (default 1,2)",
    )
    parser.add_argument("--partitions", type=int, default=4, help="member partitions of the batch")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    main(parser.parse_args())
