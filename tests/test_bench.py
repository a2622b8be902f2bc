"""The benchmark entry point runs end to end at tiny sizes (a smoke test, not a measurement)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_runs_every_scenario(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    operations = " ".join(table)
    expected = [
        "100-segment page",
        "kept by the page cache",
        "bulk registration",
        "GET /flows",
        "media GET",
        "delete a flow",
        "presigned S3 URLs",
        "presigned=true",
        "each URL signed anew",
        "webhook deliveries",
        "analytics",
        "ingest",
        "export",
        "valid Basic requests/s",
        "slow-header clients",
    ]
    if shutil.which("wrk"):  # the throughput rows, random_pages.lua and --processes 2 among them
        expected += ["pages/s, 32 connections", "random pages across the flow", "random pages, `serve --processes 2`"]
        expected += ["one page, page cache on", "random pages across the flow, page cache off"]
        expected += [
            "the same page from wrk, one connection",
            "one Flow's document from wrk, one connection",
            "the same from wrk over one connection",
        ]
    for name in expected:
        assert name in operations, name
    # The stores it built are gone (a full run builds ~20 GB of them).
    assert not [p.name for p in tmp_path.glob("tamstore-bench-*")]


def test_wrk_latency_percentiles_are_read_in_seconds_whatever_their_unit() -> None:
    """The wrk latency rows read wrk's own printout (CI has no wrk: this is its only check)."""
    from bench.__main__ import wrk_percentiles

    printed = """Running 2s test @ http://127.0.0.1:8000
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   702.86us  226.28us   4.78ms   88.50%
  Latency Distribution
     50%  645.00us
     75%  760.00us
     90%    0.95ms
     99%    1.46ms
  2861 requests in 2.00s, 95.01MB read
Requests/sec:   1430.71
"""
    assert wrk_percentiles(printed) == pytest.approx((645e-6, 1.46e-3))
    assert wrk_percentiles(printed.replace("1.46ms", "1.20s")) == pytest.approx((645e-6, 1.2))
    with pytest.raises(RuntimeError, match="no latency distribution"):
        wrk_percentiles("unable to connect to 127.0.0.1:8000 Connection refused\n")


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_quick_runs_on_postgres(pg_server: str) -> None:
    """The PostgreSQL floors have their own SQL: run the database scenarios there too."""
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--backend", "postgres", "--database-url", pg_server]
        + ["--only", "pages,register,flows,delete"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    operations = " ".join(line for line in r.stdout.splitlines() if line.startswith("| "))
    for expected in ("100-segment page", "its store query", "bulk registration", "GET /flows", "delete a flow"):
        assert expected in operations, expected
