"""Query strings to domain values, strictly (CHECKLIST §2.4): anything malformed is a 400."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from tamstore.domain.errors import BadRequest, NotFound
from tamstore.domain.flows import UUID_RE, check_uuid
from tamstore.domain.objects import UrlFilter
from tamstore.domain.paging import PageRequest, decode_cursor
from tamstore.domain.tags import TagFilter
from tamstore.domain.timerange import InvalidTimeRange, TimeRange

__all__ = ["Query", "raw_path_tail"]

MIME_RE = re.compile(
    r"^(application|audio|font|example|image|message|model|multipart|text|video"
    r"|x-(?:[0-9A-Za-z!#$%&'*+.^_`|~-]+))/([0-9A-Za-z!#$%&'*+.^_`|~-]+)$"
)
LIST_RE = re.compile(r"^([^,]+(,[^,]+)*)?$")
# Each tag filter is a condition of its own in the listing's statement: 2,000 of them (a
# 64 KiB query string holds that many) took 0.75 s of the event loop to compile, and SQLite
# then refused the statement. No real query names more than a few tags.
MAX_TAG_FILTERS = 32
# Values in all the tag filters of one query, and ids in one lookup list (collected_by_ids): a
# listing tests each value against a row's tags, so their count multiplies the rows it reads.
# Unbounded, a query naming 9,000 tag values held SQLite (and the event loop) for 118 s.
MAX_TAG_VALUES = 32
MAX_LOOKUP_IDS = 100


class Query:
    """Typed access to a request's query parameters."""

    def __init__(self, request: Request) -> None:
        self.params = request.query_params
        if any("\x00" in k or "\x00" in v for k, v in self.params.multi_items()):
            raise BadRequest("query parameters must not contain NUL characters")
        self.settings = request.app.state.ctx.settings

    def text(self, name: str) -> str | None:
        return self.params.get(name)

    def flag(self, name: str, default: bool | None = False) -> bool | None:
        value = self.params.get(name)
        if value is None:
            return default
        if value not in ("true", "false"):
            raise BadRequest(f"query parameter {name} must be true or false, not {value!r}")
        return value == "true"

    def integer(self, name: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int | None:
        value = self.params.get(name)
        if value is None:
            return None
        if not re.fullmatch(r"-?[0-9]+", value):
            raise BadRequest(f"query parameter {name} must be an integer, not {value!r}")
        number = int(value)
        if abs(number) >= 2**63:
            raise BadRequest(f"query parameter {name} is out of range")
        if number < minimum:
            raise BadRequest(f"query parameter {name} must be at least {minimum}")
        if number > maximum:
            raise BadRequest(f"query parameter {name} must be at most {maximum}")
        return number

    def timerange(self, name: str = "timerange") -> TimeRange | None:
        value = self.params.get(name)
        if value is None:
            return None
        try:
            return TimeRange.from_str(value)
        except InvalidTimeRange as exc:
            raise BadRequest(f"query parameter {name}: {exc}") from None

    def uuid(self, name: str) -> str | None:
        value = self.params.get(name)
        return None if value is None else check_uuid(value, f"query parameter {name}")

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
        value = self.params.get(name)
        if value is None:
            return default
        if value not in choices:
            raise BadRequest(f"query parameter {name} must be one of {', '.join(choices)}")
        return value

    def mime(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and not MIME_RE.match(value):
            raise BadRequest(f"query parameter {name} is not a MIME type: {value!r}")
        return value

    def uuid_list(self, name: str, *, empty_allowed: bool, most: int | None = None) -> list[str] | None:
        value = self.params.get(name)
        if value is None:
            return None
        if value == "":
            if empty_allowed:
                return []
            raise BadRequest(f"query parameter {name} must list UUIDs")
        ids = value.split(",")
        if most is not None and len(ids) > most:
            raise BadRequest(f"query parameter {name}: at most {most} ids")
        for i in ids:
            if not UUID_RE.match(i):
                raise BadRequest(f"query parameter {name}: {i!r} is not a UUID")
        return ids

    def label_list(self, name: str) -> tuple[str, ...] | None:
        value = self.params.get(name)
        if value is None:
            return None
        if not LIST_RE.match(value):
            raise BadRequest(f"query parameter {name} must be a comma-separated list")
        return tuple(v for v in value.split(",") if v)

    def tag_filters(self, prefix: str = "tag") -> list[TagFilter]:
        """``{prefix}.{name}=a,b`` and ``{prefix}_exists.{name}=true|false`` (ANDed)."""
        out = []
        for key, value in self.params.multi_items():
            if key.startswith(prefix + "."):
                name = key[len(prefix) + 1 :]
                if not LIST_RE.match(value):
                    raise BadRequest(f"query parameter {key} must be a comma-separated list")
                out.append(TagFilter(name, values=tuple(v for v in value.split(",") if v)))
            elif key.startswith(prefix + "_exists."):
                name = key[len(prefix) + len("_exists.") :]
                flag = self.flag(key)
                out.append(TagFilter(name, exists=flag))
            if len(out) > MAX_TAG_FILTERS:
                raise BadRequest(f"at most {MAX_TAG_FILTERS} {prefix}.* and {prefix}_exists.* filters in one query")
        if sum(len(f.values or ()) for f in out) > MAX_TAG_VALUES:
            raise BadRequest(f"at most {MAX_TAG_VALUES} values in all the {prefix}.* filters of one query")
        return out

    def url_filter(self) -> UrlFilter:
        tags = self.tag_filters("storage_backend_tag")
        accept_ids = self.params.get("accept_storage_ids")
        storage_ids = None
        if accept_ids:
            storage_ids = tuple(self.uuid_list("accept_storage_ids", empty_allowed=True) or ())
        return UrlFilter(
            accept_get_urls=self.label_list("accept_get_urls"),
            accept_storage_ids=storage_ids,
            presigned=self.flag("presigned", None),
            backend_tags={t.name: t.values for t in tags if t.values is not None},
            backend_tags_exist={t.name: bool(t.exists) for t in tags if t.exists is not None},
            verbose=bool(self.flag("verbose_storage")),
        )

    def page(self, key: tuple[type, ...], *, reverse_param: bool = True) -> PageRequest:
        """Any integer limit is accepted (the spec gives no bounds) and clamped to
        1..max_page_limit; ``X-Paging-Limit`` tells the client what was applied. ``key`` is the
        listing's sort key, one type a part (the cursor must match it)."""
        limit = self.integer("limit", minimum=-(2**63) + 1)
        s = self.settings
        limit = s.default_page_limit if limit is None else max(1, min(limit, s.max_page_limit))
        cursor = self.params.get("page")
        after: tuple[Any, ...] | None = None
        if cursor:
            after = decode_cursor(cursor, key)
        reverse = bool(self.flag("reverse_order")) if reverse_param else False
        return PageRequest(limit=limit, after=after, reverse=reverse)


def raw_path_tail(request: Request, marker: str) -> list[str]:
    """The percent-decoded segments of the raw path after ``/{marker}/``. Routing on the raw
    path keeps an encoded ``%2F`` inside an object id or tag name from splitting it."""
    raw = request.scope.get("raw_path", request.scope["path"].encode()).decode("latin-1")
    raw = raw.split("?", 1)[0]
    root = request.scope.get("root_path", "")
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    parts = raw.split("/")
    i = parts.index(marker, 1)
    try:
        tail = [unquote(p, errors="strict") for p in parts[i + 1 :]]
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8 once percent-decoded") from None
    if any("\x00" in p for p in tail):
        raise BadRequest("the path must not contain NUL characters")
    return tail


def path_id(value: str, what: str) -> str:
    """A UUID from the path; a malformed one is "ID in the path is invalid", a 404 (spec)."""
    if not UUID_RE.match(value):
        raise NotFound(f"{what} id {value!r} in the path is invalid")
    return value
