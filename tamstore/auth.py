"""Authentication and coarse-grained authorisation (ADR 0028, AppNote 0016; CHECKLIST §13).

Credentials: HTTP Basic (users from the auth file, passwords stored as scrypt hashes), Bearer JWTs
(from tamstore's own client-credentials token endpoint, or an identity provider's JWKS / public
key, with issuer and audience checked), and the same token as an ``access_token`` query
parameter. Scopes are AppNote 0016's ``tams-api/read|write|delete|admin``; ``scopes_for`` maps a
request to the scopes that may make it. No framework imports: ``api/security.py`` applies this.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from tamstore.domain.access import Access, Policy, groups_from_claim
from tamstore.jwks import JwksKeys, UnknownKey

__all__ = [
    "ADMIN",
    "ALL_SCOPES",
    "AuthConfig",
    "AuthError",
    "FailureLimiter",
    "Principal",
    "TooManyFailures",
    "hash_secret",
    "scopes_for",
    "verify_secret",
]

ADMIN, READ, WRITE, DELETE = "tams-api/admin", "tams-api/read", "tams-api/write", "tams-api/delete"
ALL_SCOPES = (ADMIN, READ, WRITE, DELETE)
ANY = frozenset(ALL_SCOPES)
BUILTIN_ISSUER = "tamstore"
BUILTIN_AUDIENCE = "tamstore"


class AuthError(Exception):
    """Missing or invalid credentials (401)."""


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    groups: frozenset[str] = frozenset()  # for the auth_classes policy (domain/access.py)


# -- which scopes may make which request (AppNote 0016) --------------------------------------------

_RULES: list[tuple[re.Pattern[str], dict[str, frozenset[str]]]] = []


def _rule(pattern: str, **methods: set[str]) -> None:
    table = {m.upper(): frozenset(s | {ADMIN}) for m, s in methods.items()}
    if "GET" in table:
        table["HEAD"] = table["GET"]
    _RULES.append((re.compile(f"^{pattern}$"), table))


_rule("/", get=set(ANY))
_rule("/service", get=set(ANY), post=set())
_rule("/service/storage-backends", get=set(ANY))
_rule("/service/profiles", get={READ})
_rule("/service/profiles/[^/]+", get={READ}, post={WRITE})
_rule("/service/webhooks", get={READ}, post={WRITE})
# AppNote 0016 lists read (not write) for webhook PUT and DELETE; write may too (docs/spec-notes.md).
_rule("/service/webhooks/[^/]+", get={READ}, put={READ, WRITE}, delete={READ, WRITE})
_rule("/sources", get={READ})
_rule("/sources/[^/]+", get={READ})
_rule("/sources/[^/]+/tags", get={READ})
_rule("/sources/[^/]+/(tags/.+|label|description)", get={READ}, put={WRITE}, delete={WRITE})
_rule("/flows", get={READ})
_rule("/flows/[^/]+", get={READ}, put={WRITE}, delete={DELETE})
_rule("/flows/[^/]+/tags", get={READ})
_rule(
    "/flows/[^/]+/(tags/.+|label|description|flow_collection|max_bit_rate|avg_bit_rate)",
    get={READ},
    put={WRITE},
    delete={WRITE},
)
_rule("/flows/[^/]+/read_only", get={READ}, put={WRITE})
_rule("/flows/[^/]+/segments", get={READ}, post={WRITE}, delete={DELETE})
_rule("/flows/[^/]+/storage", post={WRITE})
_rule("/objects/.+/instances", post={WRITE}, delete={WRITE})
_rule("/objects/.+", get={READ})
_rule("/flow-delete-requests", get=set())
_rule("/flow-delete-requests/[^/]+", get={DELETE})
# tamstore's own extensions
_rule("/x-tamstore/analytics/.*", get={READ})
_rule("/x-tamstore/(hls|dash|objects|frames)/.+", get={READ})
_rule("/x-tamstore/events", get={READ})
_rule("/x-tamstore/whoami", get=set(ANY))
_rule("/metrics", get={READ})

# Open to everyone: documentation, health probes, the token endpoint (it checks the client
# itself), media URLs (authorised by their own signature, like presigned S3 URLs) and the web
# UI's static files (the UI signs in against the API).
PUBLIC = re.compile(
    r"^/(docs|docs/oauth2-redirect|redoc|openapi\.json|healthz|readyz|x-tamstore/oauth2/token|x-tamstore/media/.*"
    r"|ui|ui/.*)$"
)


def scopes_for(method: str, path: str) -> frozenset[str] | None:
    """Scopes of which any one allows the request; None for a public path. Unknown paths and
    methods need admin, so that nothing is reachable by accident."""
    if PUBLIC.match(path):
        return None
    for pattern, table in _RULES:
        if pattern.match(path):
            return table.get(method.upper(), frozenset({ADMIN}))
    return frozenset({ADMIN})


# -- secrets ---------------------------------------------------------------------------------------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), for the auth file."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# -- configuration and verification ----------------------------------------------------------------


@dataclass
class AuthConfig:
    """Who may call, and how their credentials are checked."""

    methods: frozenset[str]  # "basic", "bearer"
    users: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    clients: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    token_key: bytes = b""
    token_lifetime: int = 3600
    jwks_url: str | None = None
    public_key: str | None = None
    issuer: str | None = None
    audience: str | None = None
    # Groups of the auth file's users and built-in clients, and the auth_classes policy.
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy.none)
    _jwks: JwksKeys | None = None
    # Verified credentials by a hash of what was sent (never the secret itself): a token until it
    # expires, a user name and password for CREDENTIAL_TTL seconds.
    _verified: dict[bytes, tuple[float, Principal]] = field(default_factory=dict)
    failures: FailureLimiter = field(default_factory=lambda: FailureLimiter())
    _hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HASHING_THREADS))

    @property
    def enabled(self) -> bool:
        return bool(self.methods)

    @classmethod
    def load(cls, methods: str, auth_file: Path | None, token_key: bytes, **jwt_settings: Any) -> AuthConfig:
        chosen = frozenset(m.strip() for m in methods.split(",") if m.strip() and m.strip() != "none")
        unknown = chosen - {"basic", "bearer"}
        if unknown:
            raise ValueError(f"auth: unknown method(s) {', '.join(sorted(unknown))} (use basic, bearer)")
        users: dict[str, tuple[str, frozenset[str]]] = {}
        clients: dict[str, tuple[str, frozenset[str]]] = {}
        groups: dict[str, frozenset[str]] = {}
        policy = Policy.none()
        if auth_file is not None:
            try:
                data = tomllib.loads(auth_file.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ValueError(f"auth_file {auth_file}: {exc}") from None
            for entry in data.get("users", []):
                users[entry["name"]] = (entry["password"], _scopes(entry))
                groups[entry["name"]] = _groups(entry)
            for entry in data.get("clients", []):
                clients[entry["client_id"]] = (entry["client_secret"], _scopes(entry))
                groups[entry["client_id"]] = _groups(entry)
            try:
                policy = Policy.from_toml(data.get("policy"))
            except ValueError as exc:
                raise ValueError(f"auth_file {auth_file}: {exc}") from None
        if "basic" in chosen and not users:
            raise ValueError("auth includes basic but auth_file lists no [[users]]")
        return cls(chosen, users, clients, token_key, groups=groups, policy=policy, **jwt_settings)

    def access(self, principal: Principal | None) -> Access:
        """What the principal may do with content carrying ``auth_classes`` (everything when
        authentication is off, for admins, or without a policy)."""
        if principal is None or not self.enabled:
            return self.policy.access_for((), admin=True)
        return self.policy.access_for(principal.groups, ADMIN in principal.scopes)

    # -- checking a request --

    async def authenticate(self, authorization: str | None, access_token: str | None, client: str = "") -> Principal:
        """The principal the credentials name. ``client`` (the caller's address) is held back
        with TooManyFailures after repeated failures of the costly checks (passwords)."""
        if authorization:
            kind, _, value = authorization.partition(" ")
            kind = kind.lower()
            if kind == "basic" and "basic" in self.methods:
                return await self._basic(value, client)
            if kind == "bearer" and "bearer" in self.methods:
                return await self._bearer(value.strip())
            raise AuthError("unsupported authorization scheme")
        if access_token and "bearer" in self.methods:
            return await self._bearer(access_token)
        raise AuthError("credentials required")

    async def _basic(self, value: str, client: str) -> Principal:
        key = _cache_key("basic", value)
        cached = self._verified.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        self.failures.check(client)
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            self.failures.record(client)
            raise AuthError("malformed basic credentials") from None
        user = self.users.get(name)
        if not await self.verify(password, user[0] if user else None) or user is None:
            self.failures.record(client)
            raise AuthError("invalid user name or password")
        principal = Principal(name, user[1], self.groups.get(name, frozenset()))
        self._remember(key, time.monotonic() + CREDENTIAL_TTL, principal)
        return principal

    async def verify(self, secret: str, stored: str | None) -> bool:
        """scrypt in a worker thread (it takes ~40 ms of CPU: on the event loop it would stall
        every other request), a bounded number at once. An unknown name is checked against a
        dummy hash, so that it costs what a wrong password costs and names cannot be probed."""
        async with self._hashing:
            return await asyncio.to_thread(_verify_or_dummy, secret, stored)

    def _remember(self, key: bytes, until: float, principal: Principal) -> None:
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[key] = (until, principal)

    async def _bearer(self, token: str) -> Principal:
        key = _cache_key("bearer", token)
        cached = self._verified.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        claims = await self._decode(token)
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        name = str(claims.get("client_id") or claims.get("sub") or "token")
        groups = groups_from_claim(claims.get(self.policy.groups_claim))
        principal = Principal(name, scopes & ANY, groups)
        lifetime = float(claims.get("exp", time.time() + 60)) - time.time()
        self._remember(key, time.monotonic() + lifetime, principal)
        return principal

    async def _decode(self, token: str) -> dict[str, Any]:
        options: jwt.types.Options = {"require": ["exp"]}
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        try:
            if header.get("alg") == "HS256":
                return jwt.decode(
                    token,
                    self.token_key,
                    algorithms=["HS256"],
                    audience=BUILTIN_AUDIENCE,
                    issuer=BUILTIN_ISSUER,
                    options=options,
                )
            key = await self._external_key(header)
            return jwt.decode(
                token,
                key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={**options, "verify_aud": self.audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None

    async def _external_key(self, header: dict[str, Any]) -> Any:
        if self.public_key:
            return self.public_key
        if self.jwks_url:
            self._jwks = self._jwks or JwksKeys(self.jwks_url)
            kid = header.get("kid")
            try:
                return await self._jwks.key_for(kid if isinstance(kid, str) else None)
            except UnknownKey as exc:
                raise AuthError(f"cannot verify token: {exc}") from None
        raise AuthError("token not issued by this service, and no identity provider is configured")

    # -- the built-in client-credentials grant --

    async def issue_token(
        self, client_id: str, client_secret: str, requested: str | None, address: str = ""
    ) -> dict[str, Any]:
        self.failures.check(address)
        client = self.clients.get(client_id)
        if not await self.verify(client_secret, client[0] if client else None) or client is None:
            self.failures.record(address)
            raise AuthError("invalid client credentials")
        scopes = client[1]
        if requested:
            scopes = scopes & frozenset(requested.split())
        now = int(time.time())
        claims = {
            "iss": BUILTIN_ISSUER,
            "aud": BUILTIN_AUDIENCE,
            "sub": client_id,
            "client_id": client_id,
            "scope": " ".join(sorted(scopes)),
            self.policy.groups_claim: sorted(self.groups.get(client_id, frozenset())),
            "iat": now,
            "exp": now + self.token_lifetime,
        }
        token = jwt.encode(claims, self.token_key, algorithm="HS256")
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": claims["scope"],
        }


CREDENTIAL_TTL = 60.0  # seconds a verified user name and password is believed without hashing again
HASHING_THREADS = 2  # password checks at once (each ~40 ms of CPU and 16 MiB)


def _cache_key(kind: str, credentials: str) -> bytes:
    return hashlib.sha256(f"{kind}\0{credentials}".encode("utf-8", "surrogatepass")).digest()


@functools.cache
def _dummy_hash() -> str:
    return hash_secret(secrets.token_urlsafe(16))


def _verify_or_dummy(secret: str, stored: str | None) -> bool:
    """In a worker thread: against the stored hash, or for an unknown name a dummy one (made
    here on first use too, never on the event loop)."""
    return verify_secret(secret, stored if stored is not None else _dummy_hash()) and stored is not None


class TooManyFailures(AuthError):
    """A client address failed to authenticate too often lately (429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts from this address; try again in {retry_after} s")
        self.retry_after = retry_after


class FailureLimiter:
    """At most ``limit`` failed password checks per client address in ``window`` seconds; past
    that the address is refused without checking, until the window has moved on. Addresses are
    forgotten once quiet, and at most ``max_clients`` are tracked."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if t > now - self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def check(self, client: str) -> None:
        now = time.monotonic()
        times = self._recent(client, now)
        if len(times) >= self.limit:
            raise TooManyFailures(max(1, int(times[0] + self.window - now) + 1))

    def record(self, client: str) -> None:
        if len(self._failures) >= self.max_clients and client not in self._failures:
            self._failures.clear()
        self._failures.setdefault(client, []).append(time.monotonic())


def _groups(entry: dict[str, Any]) -> frozenset[str]:
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"groups of {entry.get('name') or entry.get('client_id')!r} must be a list of names")
    return frozenset(groups)


def _scopes(entry: dict[str, Any]) -> frozenset[str]:
    scopes = frozenset(entry.get("scopes", ALL_SCOPES))
    unknown = scopes - ANY
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}")
    return scopes
