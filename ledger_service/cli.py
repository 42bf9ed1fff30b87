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
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from services.settings import Settings

if TYPE_CHECKING:
    from services.db import Database


def cmd_generate(args: argparse.Namespace) -> int:
    from ledger_service.batches.synthetic import rows

    out = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115
    try:
        for line in rows(args.rows, program=args.program, members=args.members, seed=args.seed):
            out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out != "-":
        print(f"wrote {args.rows:,} rows to {args.out}", file=sys.stderr)
    return 0


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
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=quiet) as progress, httpx.Client(base_url=url, timeout=600) as http:
        task = progress.add_task("upload", total=path.stat().st_size)
        r = http.post("/v1/batches", content=_chunks(path, progress, task), headers=headers)
        if r.status_code != 202:
            raise SystemExit(f"upload refused: {r.status_code} {r.text}")
        batch = r.json()
        posting = progress.add_task("posting", total=max(batch["rows"], 1))
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
    return 0 if batch["status"] == "completed" else 1


async def prepare_run(db: Database, *, demo: bool) -> list[str]:
    """`jifen run`, after migrating and before starting the services: the demo programs, if asked for
    and the ledger has none yet. Returns what to print once the services are up."""
    if not demo:
        return []
    from ledger_service.demo import load_demo

    created = await load_demo(db)
    return [f"Loaded demo programs: {', '.join(created)}"] if created else []


def register_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ledger's subcommands of `jifen`: `batch generate` and `batch upload`, `partners ...` and
    `settle` (ledger_service/partners/cli.py)."""
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
    gen.set_defaults(func=cmd_generate)
    up = batch.add_parser("upload", help="upload a file with a progress bar and print the final counts")
    up.add_argument("file")
    up.add_argument("--url", default=None, help="ledger base URL (default from settings)")
    up.add_argument(
        "--key", default=None, help="API key with ledger:batch (default JIFEN_API_KEY or the admin key)"
    )
    up.set_defaults(func=cmd_upload)
