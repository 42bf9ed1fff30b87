"""`jifen run` end to end: embedded PostgreSQL, migrations, demo data, all services with two workers
each, the README's curl examples word for word (ports and data folder aside), Ctrl-C, restart."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-example:start -->", 1)[1].split("<!-- readme-example:end -->", 1)[0]
    match = re.search(r"```bash\n(.*?)```", block, re.S)
    assert match
    return match.group(1)


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return proc
    proc.kill()
    raise AssertionError("jifen run did not start:\n" + "".join(lines[-40:]))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_make_run_then_readme_examples(tmp_path: Path) -> None:
    ports = {name: _free_port() for name in ("ledger", "conversion", "catalog")}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(
        JIFEN_DATA_DIR=str(tmp_path / "data"),
        JIFEN_LEDGER_PORT=str(ports["ledger"]),
        JIFEN_CONVERSION_PORT=str(ports["conversion"]),
        JIFEN_CATALOG_PORT=str(ports["catalog"]),
        JIFEN_ACCESS_LOG="false",
    )
    script = _readme_example().replace(".jifen/", f"{tmp_path / 'data'}/")
    script = script.replace("127.0.0.1:8001", f"127.0.0.1:{ports['ledger']}")
    base = f"http://127.0.0.1:{ports['ledger']}"

    proc = _start(env)
    try:
        key = (tmp_path / "data" / "admin-api-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        for port in ports.values():
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        programs = httpx.get(f"{base}/v1/programs", headers=auth).json()["data"]
        assert {p["code"] for p in programs} == {"WLT", "JFB", "CAIBEI", "BOC", "MU"}
        assert {p["timezone"] for p in programs} == {"Asia/Shanghai"}
        partners = httpx.get(f"{base}/v1/partners", headers=auth).json()["data"]
        assert {p["code"] for p in partners} == {"ICBC", "CEA", "LUCKIN"}
        terms = httpx.get(f"{base}/v1/partners/LUCKIN/terms", headers=auth).json()["data"]
        assert {t["program"] for t in terms} == {"WLT", "JFB"}
        for _ in range(2):  # the second pass is all replays
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert '"available":400' in done.stdout.replace(" ", "")
        metrics = httpx.get(f"{base}/metrics").text
        assert "jifen_ledger_operations_total" in metrics
    finally:
        _stop(proc)

    proc = _start(env)  # the data survives a restart, and the demo is not loaded twice
    try:
        view = httpx.get(f"{base}/v1/programs/WLT/members/m-10001", headers=auth).json()
        assert (view["balance"], view["available"]) == (400, 400)
        assert len(httpx.get(f"{base}/v1/programs", headers=auth).json()["data"]) == 5
    finally:
        _stop(proc)


def test_the_kernel_names_no_service_but_in_its_one_composition_point() -> None:
    """services/ holds only what the services share: it imports none of them, and names their
    packages only in services/cli.py's APPS (what `jifen run` serves)."""
    from services.cli import APPS

    names = ("ledger_service", "conversion_service", "catalog_service")
    for path in sorted((ROOT / "services").rglob("*.py")):
        text = path.read_text()
        if path.name == "cli.py":
            start = text.index("APPS = {")
            text = text[:start] + text[text.index("}", start) + 1 :]
        found = [name for name in names if name in text]
        assert not found, (path, found)
    assert sorted(app.split(".", 1)[0] for app in APPS.values()) == sorted(names)


def test_each_service_adds_its_commands(tmp_path: Path, capsys: Any) -> None:
    from services.cli import main

    out = tmp_path / "rows.csv"
    assert main(["batch", "generate", "--rows", "3", "--members", "5", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("external_id,"), lines
    for argv in (["--help"], ["batch", "upload", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
    text = capsys.readouterr().out
    for command in ("run", "migrate", "create-api-key", "batch", "upload"):
        assert command in text, command
