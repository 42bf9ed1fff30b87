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


def _readme_examples() -> str:
    """Every shell block of the README between `readme-example` markers, in order, as one script (a
    later block uses what an earlier one exported)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- readme-example:start -->(.*?)<!-- readme-example:end -->", text, re.S)
    scripts = [re.search(r"```bash\n(.*?)```", block, re.S) for block in blocks]
    assert len(scripts) >= 5 and all(scripts), "the README's walkthrough lost its examples"
    return "\n".join(m.group(1) for m in scripts if m)


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
    script = _readme_examples().replace(".jifen/", f"{tmp_path / 'data'}/")
    for service, default in (("ledger", 8001), ("conversion", 8002), ("catalog", 8003)):
        script = script.replace(f"127.0.0.1:{default}", f"127.0.0.1:{ports[service]}")
    script = script.replace(".venv/bin/jifen", f"{sys.executable} -m services.cli")
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
        for attempt in range(2):  # the second pass is all replays, and the batch all duplicates
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                check=False,
                capture_output=True,
                text=True,
                timeout=240,
                cwd=ROOT,
                env=env,
            )
            assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
            out = done.stdout.replace(" ", "")
            assert '"points":2469' in out  # the earn priced by WLT's rules and its campaign
            assert "20.00 CNY is 10000 WLT points" in done.stdout
            assert '"type":"capture"' in out
            assert '"to_points":980' in out and '"balance":980' in out  # the conversion
            assert '"voucher_codes":["SBX-DEMO-0001"]' in out
            assert '"available":4969' in out
            upload = [line for line in done.stdout.splitlines() if line.startswith("batch ")]
            assert upload and "completed" in upload[-1] and "rejected 0" in upload[-1], done.stdout[-3000:]
            if attempt == 0:
                assert "posted 0" not in upload[-1]
            else:
                assert "posted 0" in upload[-1] and "duplicates 5,000" in upload[-1], upload
        batch = httpx.get(f"{base}/v1/batches", headers=auth).json()["data"][0]
        assert batch["points_posted"] == 0 and batch["rejected_by_reason"] == {}
        metrics = httpx.get(f"{base}/metrics").text
        assert "jifen_ledger_operations_total" in metrics
        # no empty series of the ledger's (its fast lane routes); the other services' own lane routes may show
        own_lane = {"conversion": {"/v1/valuations"}, "catalog": {"/v1/redemptions"}}
        for service in ("conversion", "catalog"):
            other = httpx.get(f"http://127.0.0.1:{ports[service]}/metrics").text
            routes = set(re.findall(r'jifen_fast_lane\w*\{[^}]*route="([^"]+)"', other))
            assert routes <= own_lane[service] and "jifen_ledger" not in other, (service, routes)
    finally:
        _stop(proc)

    proc = _start(env)  # the data survives a restart, and the demo is not loaded twice
    try:
        view = httpx.get(f"{base}/v1/programs/WLT/members/m-10001", headers=auth).json()
        assert (view["balance"], view["available"]) == (4969, 4969)
        assert len(httpx.get(f"{base}/v1/programs", headers=auth).json()["data"]) == 5
        assert len(httpx.get(f"{base}/v1/programs/BOC/rules", headers=auth).json()["data"]) == 1
        rates = httpx.get(f"http://127.0.0.1:{ports['conversion']}/v1/rates", headers=auth).json()["data"]
        assert len(rates) == 6
        reward = httpx.get(
            f"http://127.0.0.1:{ports['catalog']}/v1/rewards/STARBUCKS-TALL", headers=auth
        ).json()
        assert (reward["stock"], reward["codes_available"]) == (49, 49)
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
