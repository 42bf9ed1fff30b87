"""Services as real processes on loopback ports, for tests that cross HTTP between services
or kill a service mid-flight; and a wait for lock waits, for tests that interleave transactions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from services.cli import wait_ready

ROOT = Path(__file__).resolve().parents[1]


def api_client(
    base_url: str, key: str, *, timeout: float = 60, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """An HTTP client of a service, sending `key` as its bearer API key (httpx's own limits unless given)."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
        **({"limits": limits} if limits is not None else {}),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One service under uvicorn in a child process. `kill()` is a crash (SIGKILL), `stop()` is clean.

    The child leads a process group of its own (with its uvicorn workers, if several), and only that
    group is ever signalled: never processes found by name or port, which may be someone else's."""

    def __init__(
        self,
        service: str,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        workers: int = 1,
    ) -> None:
        self.service = service
        self.database_url = database_url
        self.port = port or free_port()
        self.workers = workers
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"jifen-test-{service}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
        env.update(
            DATABASE_URL=self.database_url,
            JIFEN_ACCESS_LOG="false",
            JIFEN_LOG_LEVEL="WARNING",
            **{f"JIFEN_{self.service.upper()}_PORT": str(self.port)},
            **self.extra_env,
        )
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            f"{self.service}_service.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait_ready(self.url, self.proc, timeout_s=timeout_s, interval_s=0.1):
            return self
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.service} exited: {self.log_path.read_text()[-3000:]}")
        self.kill()
        raise RuntimeError(f"{self.service} did not become ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers itself
            self._exited(timeout_s=20)
            self._kill_group()  # all of it after a timeout; else any worker that outlived its supervisor
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """A crash: no shutdown hooks, no graceful close of connections; workers die with it."""
        if self.proc is not None and self.proc.poll() is None:
            self._kill_group()
            self.proc.wait()
        self.proc = None

    def _exited(self, timeout_s: float) -> bool:
        """Waits for the child to exit without reaping it: until it is reaped, its pid, which is
        also its group's id, cannot be given to another process, so _kill_group stays safe."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.05)
        return False

    def _kill_group(self) -> None:
        """SIGKILL to the process group the child leads (it and its workers), and nothing else. Only
        called while the child is not yet reaped (see _exited)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.proc.pid, signal.SIGKILL)


async def wait_for_lock_wait(
    watch: Any, *, waiter: int | None = None, holder: int | None = None, timeout_s: float = 10.0
) -> dict[int, list[int]]:
    """Returns once a backend waits for a lock (`waiter`, if given) behind another (`holder`, if
    given), as pg_blocking_pids sees it: {waiting pid: the pids it waits for}. A test that means to
    interleave transactions calls this between its steps instead of sleeping, so it fails, rather
    than passing without the interleaving, when the wait never happens. `watch` is a connection of
    its own (asyncpg); pids are backend pids (`conn.get_server_pid()`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await watch.fetch(
            "SELECT pid, pg_blocking_pids(pid) AS by FROM pg_stat_activity"
            " WHERE cardinality(pg_blocking_pids(pid)) > 0"
        )
        waits = {int(r["pid"]): [int(p) for p in r["by"]] for r in rows}
        if any(waiter in (None, pid) and (holder is None or holder in by) for pid, by in waits.items()):
            return waits
        if time.monotonic() > deadline:
            raise AssertionError(f"no lock wait of {waiter or 'any backend'} on {holder or 'any'}: {waits}")
        await asyncio.sleep(0.01)
