"""The benchmark entry point runs end to end at tiny sizes (a smoke test, not a measurement)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_runs_every_scenario() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    operations = " ".join(table)
    for expected in (
        "100-segment page",
        "bulk registration",
        "GET /flows",
        "media GET",
        "delete a flow",
        "presigned S3 URLs",
        "presigned=true",
        "webhook deliveries",
        "analytics",
    ):
        assert expected in operations, expected
