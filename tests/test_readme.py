"""README's two commands work as written on a fresh checkout (slow: they install into a venv)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_the_two_commands() -> None:
    install_run, run_tests = readme_commands()
    assert "tamstore serve" in install_run and "pip install" in install_run
    assert run_tests == "./scripts/test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci  # CI runs README's test command


@pytest.mark.slow
def test_install_and_run_command_serves_tams(tmp_path: Path) -> None:
    """Run README's first command in a copy of the project, as a newcomer would."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    copy = tmp_path / "checkout"
    for name in files.stdout.split():
        if (ROOT / name).exists():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    install_run = readme_commands()[0]
    port = free_port()
    env = {**os.environ, "TAMSTORE_PORT": str(port), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.Popen(
        ["bash", "-c", install_run],
        cwd=copy,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/service", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.5)
        else:
            pytest.fail("the server did not come up")
        assert r.json()["api_version"] == "8.2"
        assert (copy / "tamstore-data" / "tamstore.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
