"""Services as real processes on loopback ports, for tests that cross HTTP between services
or kill a service mid-flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One service under uvicorn in a child process. `kill()` is a crash (SIGKILL), `stop()` is clean."""

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
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.service} did not become ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """A crash: no shutdown hooks, no graceful close of connections."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            # uvicorn workers are children of the supervisor: make sure none survives
            subprocess.run(["pkill", "-KILL", "-f", f"--port {self.port}"], check=False)
        self.proc = None
