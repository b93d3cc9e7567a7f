"""After the demo: its saved state answers the README's questions through the CLI and the read API.

A short flow on both CRMs through the local stack, saved as the demo saves it (out/state), then
the real `leadwatch` command in a fresh process (`--state`), and `leadwatch serve` over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from leadwatch.testing import snapshot
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    state = tmp_path_factory.mktemp("out") / "state"
    with LocalStack(SimClock(TUESDAY_10), managers={"7": "Anna Petrova", "8": "Ivan Orlov"}) as stack:
        cards = {}
        for tenant, driver in ((B24_TENANT, BitrixDriver(stack.bitrix)), (AMO_TENANT, AmoDriver(stack.amo))):
            quick = driver.create("Quick one", "7", TUESDAY_10)
            slow = driver.create("Forgotten one", "8", TUESDAY_10)
            stack.pump()
            driver.take(quick, "7", TUESDAY_10 + timedelta(minutes=5))
            driver.call(quick, "7", TUESDAY_10 + timedelta(minutes=6), 45, "https://rec.example/1.mp3")
            cards[tenant] = (quick, slow)
        stack.pump()
        stack.clock.set(TUESDAY_10 + timedelta(minutes=20))
        stack.settle()
        items = snapshot.save(stack.dynamodb, state, stack.tenants_dir, stack.secrets)
    return {"state": state, "cards": cards, "items": items}


def leadwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LEADWATCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "leadwatch.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **(env or {})},
        timeout=120,
    )


def test_the_cli_reads_a_saved_state_without_aws(saved: dict) -> None:
    state = str(saved["state"])
    day = str(TUESDAY_10.date())
    for tenant in (B24_TENANT, AMO_TENANT):
        done = leadwatch("--state", state, "timeliness", tenant, "--from", day, "--to", day, "--json")
        assert done.returncode == 0, done.stderr
        rows = {row["name"]: row for row in json.loads(done.stdout)["managers"]}
        assert rows["Anna Petrova"]["on_time"] == 1 and rows["Ivan Orlov"]["late"] == 1
        quick, _slow = saved["cards"][tenant]
        done = leadwatch("--state", state, "calls", tenant, quick, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["attempts_total"] == 1
        done = leadwatch("--state", state, "violations", tenant, "--from", day, "--to", day)
        assert done.returncode == 0, done.stderr
        assert "late_first_processing" in done.stdout and "Ivan Orlov" in done.stdout
        assert "1 violation(s)" in done.stdout


def test_a_folder_that_is_not_a_state_is_one_line(tmp_path: Path) -> None:
    done = leadwatch("--state", str(tmp_path), "timeliness", B24_TENANT)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "is not a saved leadwatch state" in done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_the_read_api_over_a_saved_state(saved: dict) -> None:
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LEADWATCH_"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "leadwatch.cli", "--state", str(saved["state"]), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=clean,
    )
    try:
        keys: dict[str, str] = {}
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        while len(keys) < 2 and time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "serve stopped before printing its keys"
            if "X-Api-Key:" in line:
                key = line.split("X-Api-Key: ", 1)[1].split('"', 1)[0]
                keys[line.rsplit("/tenants/", 1)[1].split("/", 1)[0]] = key
        base = f"http://127.0.0.1:{port}"
        day = TUESDAY_10.date()
        for tenant in (B24_TENANT, AMO_TENANT):
            answer = requests.get(
                f"{base}/tenants/{tenant}/timeliness?from={day}&to={day}",
                headers={"X-Api-Key": keys[tenant]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert sum(row["leads"] for row in answer.json()["managers"]) == 2
            assert requests.get(f"{base}/tenants/{tenant}/timeliness", timeout=30).status_code == 401
        refused = requests.post(f"{base}/hooks/{B24_TENANT}", data=b"event=x", timeout=30)
        assert refused.status_code == 405 and "only reads" in refused.json()["error"]
    finally:
        server.terminate()
        server.wait(timeout=30)
