"""The `jifen` command: run everything, migrate, manage API keys, and each service's own commands.

The kernel names no service but in APPS, the one composition point. A service package may have a
`cli` module with `register_commands(subparsers)` (its subcommands, e.g. the ledger's `jifen batch`)
and `async prepare_run(db, *, demo) -> list[str]` (run by `jifen run` after migrating, before serving;
e.g. the ledger's demo programs; the lines returned are printed once the services are up).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, Literal

from services.settings import Settings

# What `jifen run` serves, in start-up order: each service's ASGI app factory, by module path.
APPS = {
    "ledger": "ledger_service.app:create_app",
    "conversion": "conversion_service.app:create_app",
    "catalog": "catalog_service.app:create_app",
}
SERVICES = tuple(APPS)

PrepareRun = Callable[..., Awaitable[list[str]]]


def service_clis() -> list[ModuleType]:
    """Each service package's `cli` module, for those that have one."""
    modules = []
    for app in APPS.values():
        name = app.split(".", 1)[0] + ".cli"
        if importlib.util.find_spec(name) is not None:
            modules.append(importlib.import_module(name))
    return modules


def _hooks(name: str) -> list[Any]:
    return [hook for module in service_clis() if (hook := getattr(module, name, None)) is not None]


def _database_url(settings: Settings) -> tuple[str, object | None]:
    if settings.database_url:
        return settings.database_url, None
    from services.pg import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pgdata")
    server.start()
    server.ensure_database("jifen")
    return server.url("jifen"), server


async def _bootstrap(url: str, settings: Settings, *, demo: bool) -> tuple[str, dict[str, str], list[str]]:
    from services.db import Database
    from services.keyfiles import ensure_admin_key, ensure_service_keys, pii_key

    db = Database(url, pool_size=2)
    try:
        secret = await ensure_admin_key(db, settings)
        service_keys = await ensure_service_keys(db, settings)
        pii_key(settings)
        messages: list[str] = []
        prepare: PrepareRun
        for prepare in _hooks("prepare_run"):
            messages += await prepare(db, demo=demo)
    finally:
        await db.dispose()
    return secret, service_keys, messages


def wait_ready(
    base_url: str,
    proc: subprocess.Popen[bytes],
    *,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
    stopping: Callable[[], bool] = lambda: False,
) -> bool:
    """Polls `base_url`/readyz until it answers 200 (True), or the process exits, the time runs out or
    `stopping()` says so (False: the caller tells which from `proc.poll()`)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping() and proc.poll() is None:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    return False


def spawn_service(
    service: str, settings: Settings, url: str, *, workers: int, ledger_key: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=url, JIFEN_LEDGER_URL=settings.ledger_base_url())
    if ledger_key is not None:
        env["JIFEN_LEDGER_API_KEY"] = ledger_key
    if workers > 1:
        metrics_dir = settings.data_dir / "metrics" / service
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    cmd = [
        sys.executable, "-m", "uvicorn", APPS[service], "--factory",
        "--host", settings.host, "--port", str(settings.service_port(service)),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "10",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env)


def cmd_run(args: argparse.Namespace) -> int:
    from services.migrate import upgrade

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    server: object | None = None
    try:
        url, server = _database_url(settings)
        upgrade(url)
        secret, service_keys, messages = asyncio.run(_bootstrap(url, settings, demo=not args.no_demo))
        for s in SERVICES:
            workers = args.workers or settings.service_workers(s)
            procs[s] = spawn_service(s, settings, url, workers=workers, ledger_key=service_keys.get(s))
        for service in SERVICES:
            base_url = f"http://{settings.host}:{settings.service_port(service)}"
            if not wait_ready(base_url, procs[service], stopping=lambda: stopping):
                if stopping:
                    return 0
                print(f"{service} did not become ready; see its log above", file=sys.stderr)
                return 1
        for message in messages:
            print(message)
        print("\nJifen is running:")
        for service in SERVICES:
            print(f"  {service:<11} http://{settings.host}:{settings.service_port(service)}/docs")
        print(f"\nAdmin API key: {secret}")
        print(f"(also in {settings.data_dir / 'admin-api-key'} unless JIFEN_ADMIN_API_KEY is set)")
        print("Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs.values()):
                print("a service exited; stopping the others", file=sys.stderr)
                return 1
            time.sleep(0.3)
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
        print("stopped")


def cmd_migrate(_: argparse.Namespace) -> int:
    from services.migrate import upgrade

    settings = Settings()
    url, server = _database_url(settings)
    try:
        upgrade(url)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    print("database is at the latest migration")
    return 0


def _with_db(work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Runs `work(db)` against DATABASE_URL or the embedded server."""
    from services.db import Database

    settings = Settings()
    url, server = _database_url(settings)

    async def go() -> Any:
        db = Database(url, pool_size=1)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]


def _split(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


async def _unknown_programs(db: Any, codes: Sequence[str]) -> list[str]:
    """Program codes no service knows (the service that owns programs answers, by its `cli` hook)."""
    unknown: set[str] = set(codes)
    hooks = _hooks("unknown_programs")
    if not hooks:
        return []
    for hook in hooks:
        unknown &= set(await hook(db, codes))
    return sorted(unknown)


def _print_key(key: Any) -> None:
    programs = ",".join(key.programs) if key.programs is not None else "*"
    revoked = f" revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
    print(
        f"{key.id:>5}  {key.status:<8} {key.prefix:<11} {key.name:<24} "
        f"{','.join(key.scopes)}  [{programs}]{revoked}"
    )


def cmd_create_api_key(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from services import apikeys

    scopes = _split(args.scopes) or []
    programs = _split(args.programs)
    try:
        body = apikeys.ApiKeyIn(name=args.name, scopes=scopes, programs=programs, partner=args.partner)
    except ValidationError as exc:
        print(
            f"error: {'; '.join(str(e['msg']) + ' ' + str(e['input']) for e in exc.errors())}",
            file=sys.stderr,
        )
        return 2

    async def work(db: Any) -> Any:
        if programs:
            unknown = await _unknown_programs(db, programs)
            if unknown:
                return f"no program {', '.join(unknown)}"
        if args.partner:
            for hook in _hooks("partner_exists"):
                if not await hook(db, args.partner):
                    return f"no partner {args.partner}"
        return await apikeys.create(db, None, body)

    created = _with_db(work)
    if isinstance(created, str):
        print(f"error: {created}", file=sys.stderr)
        return 2
    print(f"API key {created.id} ({created.name}); shown once, store it now:\n{created.secret}")
    return 0


def cmd_api_keys(args: argparse.Namespace) -> int:
    from services import apikeys
    from services.errors import DomainError

    async def work(db: Any) -> Any:
        if args.keys_command == "list":
            status: Literal["active"] | None = None if args.all else "active"
            keys, cursor = [], None
            while True:
                page = await apikeys.list_keys(db, None, status=status, limit=500, cursor=cursor)
                keys += page.data
                if page.next_cursor is None:
                    return keys
                cursor = page.next_cursor
        if args.keys_command == "revoke":
            return await apikeys.revoke(db, None, args.id)
        return await apikeys.rotate(db, None, args.id)

    try:
        result = _with_db(work)
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    if args.keys_command == "list":
        print(f"{'id':>5}  {'status':<8} {'prefix':<11} {'name':<24} scopes  [programs]")
        for key in result:
            _print_key(key)
    elif args.keys_command == "revoke":
        _print_key(result)
        print("revoked: every running service refuses it from now on")
    else:
        print(f"API key {args.id} is revoked; its replacement, {result.id} ({result.name}); shown once:")
        print(result.secret)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jifen", description="Jifen points platform")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start PostgreSQL (embedded unless DATABASE_URL), migrate, serve all")
    run.add_argument(
        "--workers", type=int, default=None, help="uvicorn workers per service (default: from the CPU count)"
    )
    run.add_argument("--no-demo", action="store_true", help="do not load the demo programs")
    run.set_defaults(func=cmd_run)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    key = sub.add_parser("create-api-key", help="create an API key")
    key.add_argument("--name", default="cli")
    key.add_argument("--scopes", required=True, help="comma-separated, e.g. ledger:read,ledger:earn")
    key.add_argument("--programs", default=None, help="comma-separated program codes (default: all)")
    key.add_argument(
        "--partner", default=None, help="bind the key to a coalition partner (its earns and burns)"
    )
    key.set_defaults(func=cmd_create_api_key)

    keys = sub.add_parser("api-keys", help="create, list, revoke and rotate API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create an API key (the same as create-api-key)")
    create.add_argument("--name", default="cli")
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. ledger:read,ledger:earn")
    create.add_argument("--programs", default=None, help="comma-separated program codes (default: all)")
    create.add_argument("--partner", default=None, help="bind the key to a coalition partner")
    create.set_defaults(func=cmd_create_api_key)
    listing = keys.add_parser("list", help="the active keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.set_defaults(func=cmd_api_keys)
    for name, text in (("revoke", "revoke a key: refused everywhere within a second"),
                       ("rotate", "a new secret for a key; the old one is revoked")):  # fmt: skip
        command = keys.add_parser(name, help=text)
        command.add_argument("id", type=int)
        command.set_defaults(func=cmd_api_keys)

    register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
    for register in _hooks("register_commands"):
        register(sub)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
