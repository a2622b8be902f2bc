"""The next page's URL is what Starlette's query rewriting gives, in one pass."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from tamstore.api.responses import next_page_url


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"limit=100",
        b"page=old&limit=2&tag.genre=a%20b&page=older",
        b"x=&y=1&timerange=%5B0:0_10:0%29",
        b"label=%E2%82%AC+%26+more&page=",
        b"tag_exists.genre=true&tag.genre=news&tag.genre=sport",
    ],
)
def test_the_next_page_url_is_starlettes(query: bytes) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/flows",
        "root_path": "/tams",
        "query_string": query,
        "headers": [(b"host", b"store.example:8443")],
        "server": ("store.example", 8443),
    }
    request = Request(scope)
    cursor = "MTIz/+=-_"
    expected = request.url.remove_query_params("page").include_query_params(page=cursor)
    assert next_page_url(request, cursor) == str(expected)
