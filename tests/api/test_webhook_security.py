"""Webhooks as an attacker would use them (issue 16, items 1-2): stealing a webhook's secret by
retargeting it, reaching internal addresses through it (SSRF), headers HTTP cannot carry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tamstore.auth import hash_secret
from tamstore.config import Settings
from tamstore.testing import app_client
from tests.conftest import put_flow
from tests.receiver import Receiver

USERS = {"alice": ["tams-api/read", "tams-api/write"], "bob": ["tams-api/read", "tams-api/write"]}
USERS["root"] = ["tams-api/admin"]


@pytest.fixture
def auth_settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "auth.toml"
    path.write_text(
        "\n".join(
            f'[[users]]\nname = "{name}"\npassword = "{hash_secret(name + "-pw")}"\nscopes = {scopes!r}\n'.replace(
                "'", '"'
            )
            for name, scopes in USERS.items()
        )
    )
    return dataclasses.replace(settings, auth="basic", auth_file=path, webhook_backoff_ms=20, worker_lease=2)


async def in_error(client: httpx.AsyncClient, hook_id: str) -> dict[str, Any]:
    """The webhook once its deliveries have failed for good (or as it is after 10 s)."""
    for _ in range(200):
        doc = (await client.get(f"/service/webhooks/{hook_id}")).json()
        if doc["status"] == "error":
            break
        await asyncio.sleep(0.05)
    return doc  # type: ignore[no-any-return]


def as_user(name: str) -> tuple[str, str]:
    return (name, name + "-pw")


def hook_body(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "events": ["flows/updated"], **extra}


async def test_only_the_owner_or_an_admin_may_change_a_webhook(auth_settings: Settings, receiver: Receiver) -> None:
    async with app_client(auth_settings) as client:
        body = hook_body(receiver.url + "/a", api_key_name="X-Api-Key", api_key_value="s3cret")
        r = await client.post("/service/webhooks", json=body, auth=as_user("alice"))
        assert r.status_code == 201, r.text
        hook = r.json()
        assert "api_key_value" not in hook
        put = {**hook, "url": receiver.url + "/stolen"}
        path = f"/service/webhooks/{hook['id']}"
        assert (await client.put(path, json=put, auth=as_user("bob"))).status_code == 403
        assert (await client.delete(path, auth=as_user("bob"))).status_code == 403
        assert (await client.put(path, json=put, auth=as_user("alice"))).status_code == 201
        assert (await client.put(path, json=put, auth=as_user("root"))).status_code == 201
        r = await client.post("/service/webhooks", json=hook_body(receiver.url + "/b"), auth=as_user("bob"))
        assert (await client.delete(f"/service/webhooks/{r.json()['id']}", auth=as_user("root"))).status_code == 204
        assert (await client.delete(path, auth=as_user("alice"))).status_code == 204


async def test_a_new_url_without_the_secret_drops_the_secret(settings: Settings, receiver: Receiver) -> None:
    fast = dataclasses.replace(settings, webhook_backoff_ms=20)
    async with app_client(fast, workers=True) as client:
        body = hook_body(receiver.url + "/a", api_key_name="X-Api-Key", api_key_value="s3cret")
        hook = (await client.post("/service/webhooks", json=body)).json()
        flow = await put_flow(client)
        assert (await client.put(f"/flows/{flow['id']}/label", json="one")).status_code == 204
        await receiver.arrived(1)
        path = f"/service/webhooks/{hook['id']}"
        # The same URL, no value: kept (it cannot be read back to be resent).
        assert (await client.put(path, json={**hook, "status": "created"})).status_code == 201
        assert (await client.put(f"/flows/{flow['id']}/label", json="two")).status_code == 204
        await receiver.arrived(2)
        # A new URL, no value: dropped. A new header name, no value: dropped too.
        moved = {**hook, "status": "created", "url": receiver.url + "/elsewhere"}
        assert (await client.put(path, json=moved)).status_code == 201
        assert (await client.put(f"/flows/{flow['id']}/label", json="three")).status_code == 204
        await receiver.arrived(3)
        seen = [(r["path"], r["headers"].get("X-Api-Key")) for r in receiver.received]
        assert seen == [("/a", "s3cret"), ("/a", "s3cret"), ("/elsewhere", None)]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",  # the same, IPv4-mapped
        "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata address
        "http://0.0.0.0:8000/",
        "http://10.1.2.3/",  # private: not allowed by default
        "http://192.168.0.1/",
        "http://[fc00::1]/",
        "ftp://example.com/",
        "http://:80/",
        "http://host:99999/",
    ],
)
async def test_internal_targets_are_refused_at_registration(client: httpx.AsyncClient, url: str) -> None:
    r = await client.post("/service/webhooks", json=hook_body(url))
    assert r.status_code == 400, r.text
    assert set(r.json()) >= {"type", "summary", "time"}


async def test_loopback_only_when_the_policy_allows_it(settings: Settings, receiver: Receiver) -> None:
    # serve on loopback: 'auto' allows a local receiver (local development keeps working)
    async with app_client(settings) as client:
        assert (await client.post("/service/webhooks", json=hook_body(receiver.url))).status_code == 201
    public = dataclasses.replace(settings, webhook_targets="public")
    async with app_client(public) as client:
        for url in (receiver.url, "http://localhost:9/", "http://[::1]:9/", "http://127.7.7.7/"):
            r = await client.post("/service/webhooks", json=hook_body(url))
            assert r.status_code == 400 and "loopback" in r.json()["summary"], (url, r.text)
    allowed = dataclasses.replace(settings, webhook_targets="public", webhook_allow_networks="127.0.0.0/8")
    async with app_client(allowed) as client:
        assert (await client.post("/service/webhooks", json=hook_body(receiver.url))).status_code == 201
    private = dataclasses.replace(settings, webhook_targets="private")
    async with app_client(private) as client:
        assert (await client.post("/service/webhooks", json=hook_body("http://10.1.2.3/"))).status_code == 201
        r = await client.post("/service/webhooks", json=hook_body("http://169.254.169.254/"))
        assert r.status_code == 400, "link-local stays refused even where private networks are allowed"


async def test_the_policy_is_checked_again_when_delivering(settings: Settings, receiver: Receiver) -> None:
    """What was allowed at registration is checked again on the address resolved at connect
    time: here the policy tightened in between (as a name that now resolves elsewhere would)."""
    async with app_client(settings) as client:
        hook = (await client.post("/service/webhooks", json=hook_body(receiver.url + "/x"))).json()
        flow = await put_flow(client)
    strict = dataclasses.replace(
        settings, webhook_targets="public", webhook_backoff_ms=10, webhook_max_attempts=2, worker_lease=2
    )
    async with app_client(strict, workers=True) as client:
        assert (await client.put(f"/flows/{flow['id']}/label", json="x")).status_code == 204
        doc = await in_error(client, hook["id"])
        assert doc["status"] == "error", doc
        assert "not an allowed webhook target" in doc["error"]["summary"]
    assert receiver.received == []


async def test_delivery_errors_do_not_map_the_network(settings: Settings) -> None:
    """A closed port and a silent one read the same: the error text is no port scanner."""
    fast = dataclasses.replace(settings, webhook_backoff_ms=10, webhook_max_attempts=1, worker_lease=2)
    async with app_client(fast, workers=True) as client:
        hook = (await client.post("/service/webhooks", json=hook_body("http://127.0.0.1:9/"))).json()
        flow = await put_flow(client)
        assert (await client.put(f"/flows/{flow['id']}/label", json="x")).status_code == 204
        doc = await in_error(client, hook["id"])
        summary = doc["error"]["summary"]
        assert "no answer from the receiver" in summary
        assert "refused" not in summary.lower() and "errno" not in summary.lower()


@pytest.mark.parametrize(
    "extra",
    [
        {"api_key_name": "Ключ", "api_key_value": "x"},
        {"api_key_name": "X-Key", "api_key_value": "€uro"},
        {"api_key_name": "X-Key", "api_key_value": "a\r\nX-Injected: 1"},
        {"api_key_name": "Bad Name", "api_key_value": "x"},
        {"api_key_name": "Host", "api_key_value": "evil.example"},
        {"api_key_name": "Content-Length", "api_key_value": "0"},
        {"api_key_value": "a value with no name"},
    ],
)
async def test_headers_http_cannot_carry_are_refused(
    client: httpx.AsyncClient, receiver: Receiver, extra: dict[str, str]
) -> None:
    r = await client.post("/service/webhooks", json=hook_body(receiver.url, **extra))
    assert r.status_code == 400, r.text
    hook = (await client.post("/service/webhooks", json=hook_body(receiver.url))).json()
    r = await client.put(f"/service/webhooks/{hook['id']}", json={**hook, **extra})
    assert r.status_code == 400, r.text


async def test_a_named_host_is_delivered_to_its_checked_address(settings: Settings, receiver: Receiver) -> None:
    """A URL with a host name: the delivery connects to the address the name resolved to (the
    one checked) and keeps the name, with its port, in the Host header."""
    fast = dataclasses.replace(settings, webhook_backoff_ms=20)
    async with app_client(fast, workers=True) as client:
        named = f"http://localhost:{receiver.port}/named"
        assert (await client.post("/service/webhooks", json=hook_body(named))).status_code == 201
        flow = await put_flow(client)
        assert (await client.put(f"/flows/{flow['id']}/label", json="x")).status_code == 204
        await receiver.arrived(1)
    [got] = receiver.received
    assert (
        got["path"] == "/named"
        and {k.lower(): v for k, v in got["headers"].items()}["host"] == f"localhost:{receiver.port}"
    )


async def test_a_name_server_that_never_answers_holds_up_no_other_request(
    auth_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhook URLs name hosts of the client's choosing, and so their name servers. Names
    whose server never answers are resolved on threads of their own, within a time limit: the
    registrations are answered (a name that does not resolve yet is accepted), and a password
    check, which needs a thread of the shared pool, is not held up behind them. A silent name
    server is the one fault here that is faked: a test cannot silence the machine's resolver."""
    from tamstore import outbound

    released = threading.Event()
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith(".silent.example"):
            released.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(outbound, "RESOLVE_SECONDS", 1.0)
    try:
        async with app_client(auth_settings) as client:
            assert (await client.get("/flows", auth=as_user("alice"))).status_code == 200
            started = time.monotonic()
            hooks = [
                asyncio.ensure_future(
                    client.post(
                        "/service/webhooks", json=hook_body(f"http://h{i}.silent.example/"), auth=as_user("alice")
                    )
                )
                for i in range(10)
            ]
            await asyncio.sleep(0.2)
            assert (await client.get("/flows", auth=as_user("bob"))).status_code == 200
            assert time.monotonic() - started < 1.5
            assert [r.status_code for r in await asyncio.gather(*hooks)] == [201] * 10
            assert time.monotonic() - started < 4
    finally:
        released.set()


class _Dripper:
    """A webhook receiver that answers a byte at a time: the status line and headers at once
    and then a body of 100 MB (``body``), or the headers themselves (``headers``)."""

    def __init__(self, drip: str) -> None:
        self.drip = drip
        self.requests = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(
                        b":"
                    )[1]
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.drip == "body":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\n")
                while not writer.is_closing():
                    writer.write(b"x" if self.drip == "body" else b"x-drip: x\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.2)


@pytest.mark.parametrize("drip", ["body", "headers"])
async def test_a_receiver_that_answers_a_byte_at_a_time_holds_a_delivery_no_longer_than_the_timeout(
    settings: Settings, drip: str
) -> None:
    """A receiver that drips its answer (never pausing long enough for a read to time out) is
    given the whole webhook_timeout, not each read of it. Its status is all that is read: a 200
    with a body that never ends is a delivery made; headers that never end are a failure."""
    fast = dataclasses.replace(
        settings, webhook_timeout=1, webhook_backoff_ms=10, webhook_max_attempts=1, worker_lease=2
    )
    dripper = _Dripper(drip)
    async with dripper as url, app_client(fast, workers=True) as client:
        hook = (await client.post("/service/webhooks", json=hook_body(url))).json()
        flow = await put_flow(client)
        for label in ("one", "two"):
            assert (await client.put(f"/flows/{flow['id']}/label", json=label)).status_code == 204
        if drip == "body":
            for _ in range(100):
                if dripper.requests == 2:
                    break
                await asyncio.sleep(0.05)
            assert dripper.requests == 2
        else:
            doc = await in_error(client, hook["id"])
            assert doc["status"] == "error" and "no answer from the receiver" in doc["error"]["summary"]


async def test_each_owner_registers_at_most_max_webhooks(auth_settings: Settings, receiver: Receiver) -> None:
    """Every webhook sends every event it hears of to its URL: unbounded, one client could make
    tamstore send any number of requests to a host of its choosing for each change."""
    async with app_client(dataclasses.replace(auth_settings, max_webhooks=2)) as client:
        alices = []
        for i in range(2):
            r = await client.post("/service/webhooks", json=hook_body(f"{receiver.url}/{i}"), auth=as_user("alice"))
            assert r.status_code == 201, r.text
            alices.append(r.json()["id"])
        r = await client.post("/service/webhooks", json=hook_body(receiver.url), auth=as_user("alice"))
        assert r.status_code == 400 and "at most 2 webhooks per owner" in r.json()["summary"], r.text
        r = await client.post("/service/webhooks", json=hook_body(receiver.url), auth=as_user("bob"))
        assert r.status_code == 201, "another owner's webhooks are counted apart"
        r = await client.delete(f"/service/webhooks/{alices[0]}", auth=as_user("alice"))
        assert r.status_code == 204
        r = await client.post("/service/webhooks", json=hook_body(receiver.url), auth=as_user("alice"))
        assert r.status_code == 201, r.text


async def test_registrations_at_once_do_not_pass_max_webhooks(auth_settings: Settings, receiver: Receiver) -> None:
    """Registrations racing each other are counted one after another: on PostgreSQL, each
    counts only after the one before it has committed."""
    async with app_client(dataclasses.replace(auth_settings, max_webhooks=3)) as client:
        racing = [
            client.post("/service/webhooks", json=hook_body(f"{receiver.url}/{i}"), auth=as_user("alice"))
            for i in range(12)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*racing))
        assert statuses == [201] * 3 + [400] * 9, statuses
        listed = await client.get("/service/webhooks", auth=as_user("alice"))
        assert len(listed.json()) == 3
