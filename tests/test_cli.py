"""The ``tamstore`` command: help, clear one-line errors, persistence across restarts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.live import LiveServer


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tamstore", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_help_explains_commands_and_options() -> None:
    top = run("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "db" in top.stdout
    serve = run("serve", "--help")
    for flag in ("--host", "--port", "--data-dir", "--database-url", "TAMSTORE_PORT"):
        assert flag in serve.stdout


def _one_line_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in lines[0]


def test_bad_flag_is_a_one_line_error() -> None:
    result = run("serve", "--port", "eighty")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "eighty" in result.stderr
    _one_line_error(run("serve", "--min-object-timeout", "5"), "min_object_timeout")
    _one_line_error(run("serve", "--page-cache-mib", "-1"), "page_cache_mib")
    _one_line_error(run("serve", "--db-statement-timeout", "-1"), "db_statement_timeout")
    _one_line_error(run("serve", "--s3-timeout", "0"), "s3_timeout")
    _one_line_error(run("serve", "--max-header-kib", "0"), "max_header_kib")
    _one_line_error(run("serve", "--max-webhooks", "-5"), "max_webhooks")
    _one_line_error(run("serve", "--max-object-mib", "0"), "max_object_mib")
    _one_line_error(run("serve", "--min-free-mib", "-1"), "min_free_mib")
    _one_line_error(run("serve", "--listing-scan-rows", "0"), "listing_scan_rows")


def test_unwritable_data_dir_is_a_one_line_error() -> None:
    # /proc refuses new directories even to root, so this holds whoever runs the tests.
    _one_line_error(run("serve", "--data-dir", "/proc/self/tamstore-data"), "data dir")


def test_data_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(run("serve", "--data-dir", str(blocker)), "data dir")


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _one_line_error(run("serve", "--data-dir", str(tmp_path), "--port", str(port)), "in use")


def test_environment_sets_options(tmp_path: Path) -> None:
    result = run("serve", env={"TAMSTORE_PORT": "0x"})
    assert result.returncode != 0 and "0x" in result.stderr


def test_db_upgrade(tmp_path: Path) -> None:
    result = run("db", "upgrade", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tamstore.db").exists()


def test_server_keeps_everything_across_a_restart(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    flow_id = "4b3b9f4e-9d6d-4f0e-9d43-2f1c1b0a6a11"
    body = {
        "id": flow_id,
        "source_id": "0b7ba1de-3c36-4f8a-9d1b-8a4fd1a1e8f2",
        "format": "urn:x-nmos:format:data",
        "codec": "text/plain",
        "container": "text/plain",
        "essence_parameters": {},
        "label": "kept",
    }
    try:
        assert httpx.put(f"{server.url}/flows/{flow_id}", json=body).status_code == 201
        [obj] = httpx.post(f"{server.url}/flows/{flow_id}/storage", json={"limit": 1}).json()["media_objects"]
        assert httpx.put(obj["put_url"]["url"], content=b"hello").status_code == 200
        seg = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
        assert httpx.post(f"{server.url}/flows/{flow_id}/segments", json=seg).status_code == 201
    finally:
        server.stop()
    server = LiveServer(tmp_path / "data").start()
    try:
        assert httpx.get(f"{server.url}/flows/{flow_id}").json()["label"] == "kept"
        [seg] = httpx.get(f"{server.url}/flows/{flow_id}/segments").json()
        assert httpx.get(seg["get_urls"][0]["url"]).content == b"hello"
    finally:
        server.stop()


def test_every_setting_has_a_command_line_type() -> None:
    """Option types come from the annotations (``X | None`` is ``X``); an annotation the CLI
    cannot read fails loudly instead of becoming a string option."""
    import dataclasses
    from pathlib import Path

    import pytest

    from tamstore import config

    kinds = config.setting_kinds()
    assert kinds["data_dir"] is Path and kinds["storage_config"] is Path and kinds["database_url"] is str
    assert kinds["port"] is int and kinds["workers"] is bool

    @dataclasses.dataclass(frozen=True)
    class Odd(config.Settings):
        ratio: float | None = None

    original = config.Settings
    try:
        config.Settings = Odd  # type: ignore[misc]
        with pytest.raises(TypeError, match="ratio"):
            config.setting_kinds()
    finally:
        config.Settings = original  # type: ignore[misc]
