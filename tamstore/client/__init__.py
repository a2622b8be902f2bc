"""A client for any TAMS 8.2 server (``tamstore ingest`` and ``export`` are built on it).

>>> from tamstore.client import TamsClient
>>> with TamsClient("http://127.0.0.1:8000") as tams:  # doctest: +SKIP
...     for flow in tams.flows(format="urn:x-nmos:format:video"):
...         print(flow["id"], flow.get("label"))
"""

from tamstore.client.api import AsyncTamsClient, TamsClient, best_url
from tamstore.client.auth import AuthOptions, BearerToken, ClientCredentials, auth_from
from tamstore.client.errors import ObjectTooLarge, RefusedMediaUrl, TamsApiError

__all__ = [
    "AsyncTamsClient",
    "AuthOptions",
    "BearerToken",
    "ClientCredentials",
    "ObjectTooLarge",
    "RefusedMediaUrl",
    "TamsApiError",
    "TamsClient",
    "auth_from",
    "best_url",
]
