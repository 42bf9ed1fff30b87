"""The ledger's part of the `jifen` command (services/cli.py composes it): `jifen batch generate` and
`jifen batch upload` (a synthetic file, and an upload with progress), and the demo programs `jifen run`
loads into an empty database."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from services.settings import Settings

if TYPE_CHECKING:
    from services.db import Database


def cmd_generate(args: argparse.Namespace) -> int:
    from ledger_service.batches.synthetic import rows

    out = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115
    try:
        lines = rows(
            args.rows, program=args.program, members=args.members, seed=args.seed, bad_share=args.bad_share
        )
        for line in lines:
            out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out != "-":
        print(f"wrote {args.rows:,} rows to {args.out}", file=sys.stderr)
    return 0


class _PerUnit(ProgressColumn):
    """The upload in bytes, the posting in rows: one column that renders each task in its unit."""

    def __init__(self, by_bytes: ProgressColumn, by_rows: ProgressColumn) -> None:
        super().__init__()
        self.by_bytes, self.by_rows = by_bytes, by_rows

    def render(self, task: Task) -> Text:
        column = self.by_rows if task.fields.get("unit") == "rows" else self.by_bytes
        rendered = column.render(task)
        return rendered if isinstance(rendered, Text) else Text(str(rendered))


class _RowSpeed(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def _chunks(path: Path, progress: Progress, task: object) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            progress.update(task, advance=len(chunk))  # type: ignore[arg-type]
            yield chunk


def upload_file(
    path: Path, url: str, key: str, *, idempotency_key: str | None = None, quiet: bool = False
) -> dict:  # type: ignore[type-arg]
    """Uploads and waits for the batch to finish; returns its final status."""
    content_type = "application/x-ndjson" if path.suffix in (".ndjson", ".jsonl") else "text/csv"
    headers = {
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": idempotency_key or f"upload-{uuid.uuid4()}",
        "Content-Type": content_type,
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        _PerUnit(DownloadColumn(), MofNCompleteColumn()),
        _PerUnit(TransferSpeedColumn(), _RowSpeed()),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=quiet) as progress, httpx.Client(base_url=url, timeout=600) as http:
        task = progress.add_task("upload", total=path.stat().st_size)
        r = http.post("/v1/batches", content=_chunks(path, progress, task), headers=headers)
        if r.status_code != 202:
            raise SystemExit(f"upload refused: {r.status_code} {r.text}")
        batch = r.json()
        posting = progress.add_task("posting", total=max(batch["rows"], 1), unit="rows")
        while batch["status"] not in ("completed", "failed"):
            time.sleep(0.5)
            batch = http.get(f"/v1/batches/{batch['id']}", headers={"Authorization": f"Bearer {key}"}).json()
            progress.update(posting, completed=batch["processed"])
    return batch  # type: ignore[no-any-return]


def cmd_upload(args: argparse.Namespace) -> int:
    settings = Settings()
    key = (
        args.key
        or os.environ.get("JIFEN_API_KEY")
        or (settings.data_dir / "admin-api-key").read_text().strip()
    )
    batch = upload_file(Path(args.file), args.url or settings.ledger_base_url(), key)
    print(
        f"batch {batch['id']}: {batch['status']}; rows {batch['rows']:,}, "
        f"posted {batch['posted']:,}, "
        f"duplicates {batch['duplicates']:,}, rejected {batch['rejected']:,}, "
        f"points {batch['points_posted']:,}"
    )
    if batch.get("error"):
        print(f"error: {batch['error']}", file=sys.stderr)
    reasons: dict[str, int] = batch.get("rejected_by_reason") or {}
    if reasons:
        print("rejected rows by reason:", file=sys.stderr)
        for reason, count in reasons.items():
            print(f"  {reason:<40} {count:>10,}", file=sys.stderr)
        print(f"lines: GET /v1/batches/{batch['id']}/rejections?reason=...", file=sys.stderr)
    # A script (or CI) must see a file that did not post whole: any rejected row is a failure.
    return 0 if batch["status"] == "completed" and not batch["rejected"] else 1


def cmd_placement(args: argparse.Namespace) -> int:
    """The tables' Citus placement (ledger_service/placement.py); with --citus the calls applying it,
    with --markdown the tables of docs/scale-out.md."""
    from collections import Counter

    from ledger_service.placement import KNOWN_GAPS, PLACEMENTS, citus_commands, markdown

    if args.citus:
        print("\n".join(citus_commands(shard_count=args.shards)))
        return 0
    if args.markdown:
        print("\n".join(markdown()))
        return 0
    width = max(len(p.table) for p in PLACEMENTS)
    for p in PLACEMENTS:
        print(f"{p.table:<{width}}  {p.kind:<17}  {p.column or '':<10}  {p.reason}")
    by_rule = Counter(gap.rule for gap in KNOWN_GAPS)
    print(f"\n{len(KNOWN_GAPS)} known gaps block distribution (docs/scale-out.md):")
    for rule, count in sorted(by_rule.items()):
        print(f"  {count:>3}  {rule}")
    return 0


async def prepare_run(db: Database, *, demo: bool) -> list[str]:
    """`jifen run`, after migrating and before starting the services: the demo programs and their
    earning rules, if asked for and not loaded yet. Returns what to print once the services are up."""
    if not demo:
        return []
    from ledger_service.demo import load_demo

    return await load_demo(db)


async def unknown_programs(db: Database, codes: list[str]) -> list[str]:
    """For `jifen create-api-key --programs`: the codes that name no ledger program."""
    from ledger_service.programs.service import unknown_programs as unknown

    return await unknown(db, codes)


async def partner_exists(db: Database, code: str) -> bool:
    """For `jifen create-api-key --partner`: whether the ledger knows the partner."""
    from ledger_service.api_keys.service import partner_exists as exists

    return await exists(db, code)


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ledger's subcommands of `jifen`: `batch generate` and `batch upload`, `placement`,
    `partners ...` and `settle` (ledger_service/partners/cli.py)."""
    from ledger_service.partners import cli as partners_cli

    partners_cli.register_commands(sub)
    batch = sub.add_parser("batch", help="card-issuer batch files").add_subparsers(
        dest="batch_command", required=True
    )
    gen = batch.add_parser("generate", help="write a realistic synthetic CSV file")
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--out", default="-", help="file path, or - for stdout")
    gen.add_argument("--program", default="BOC")
    gen.add_argument("--members", type=int, default=200_000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument(
        "--bad-share", type=float, default=0.005, help="share of bad rows, rejected on upload (0: none)"
    )
    gen.set_defaults(func=cmd_generate)
    up = batch.add_parser("upload", help="upload a file with a progress bar and print the final counts")
    up.add_argument("file")
    up.add_argument("--url", default=None, help="ledger base URL (default from settings)")
    up.add_argument(
        "--key", default=None, help="API key with ledger:batch (default JIFEN_API_KEY or the admin key)"
    )
    up.set_defaults(func=cmd_upload)
    placement = sub.add_parser("placement", help="where each table goes on Citus (docs/scale-out.md)")
    placement.add_argument("--citus", action="store_true", help="print the Citus calls that apply it")
    placement.add_argument("--markdown", action="store_true", help="the tables of docs/scale-out.md")
    placement.add_argument("--shards", type=int, default=32, help="citus.shard_count for --citus")
    placement.set_defaults(func=cmd_placement)
