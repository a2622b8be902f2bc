"""Routes: HLS and DASH playback of any Flow (tamstore extension, ``/x-tamstore/``).

``GET /x-tamstore/hls/{flow_id}.m3u8`` and ``GET /x-tamstore/dash/{flow_id}.mpd`` take
``timerange`` (closed: on demand; open end: live), ``window`` (seconds of a live window) and the
segments listing's URL filters (``accept_get_urls``, ``accept_storage_ids``, ``presigned``,
``storage_backend_tag.*``). With authentication on they accept ``access_token`` like every
route, and keep it (and the filters) in the URLs they point to, so a plain player works.
``/x-tamstore/objects/{object_id}.{ext}`` redirects to an Object's URL, for URLs without the
extension FFmpeg's HLS reader insists on (see ``ops.playback``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from tamstore.api.deps import base_url, context
from tamstore.api.params import Query, path_id
from tamstore.api.routing import api_router
from tamstore.domain.errors import BadRequest
from tamstore.domain.timerange import InvalidTimeRange, parse_timestamp
from tamstore.ops import frames, playback

router = api_router(tags=["playback"], include_in_schema=False)

HLS_TYPE = "application/vnd.apple.mpegurl"
DASH_TYPE = "application/dash+xml"
# Query parameters a playlist carries into the URLs it points to.
CARRIED = ("access_token", "accept_get_urls", "accept_storage_ids", "presigned")


def _request(request: Request, flow_id: str) -> playback.PlayRequest:
    path_id(flow_id, "Flow")
    q = Query(request)
    window = None
    text = q.text("window")
    if text is not None:
        try:
            seconds = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise BadRequest("query parameter window: seconds, a positive decimal number") from None
        window = int(seconds * 1_000_000_000)
        if not 0 < window <= playback.MAX_WINDOW:
            raise BadRequest(f"query parameter window: between 0 and {playback.MAX_WINDOW // 10**9} seconds")
    carried = {k: v for k, v in request.query_params.items() if k in CARRIED or k.startswith("storage_backend_tag.")}
    return playback.PlayRequest(
        flow_id=flow_id,
        timerange=q.timerange(),
        window_ns=window,
        urls=q.url_filter(),
        base_url=base_url(request),
        passthrough=carried,
    )


async def _encoded(parts: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for part in parts:
        if part:
            yield part.encode()


def _reply(body: str | AsyncIterator[str], media_type: str) -> Response:
    headers = {"Cache-Control": "no-cache"}  # live windows move; URLs in them expire
    if isinstance(body, str):
        return Response(body, media_type=media_type, headers=headers)
    return StreamingResponse(_encoded(body), media_type=media_type, headers=headers)


@router.api_route("/x-tamstore/hls/{flow_id}.m3u8", methods=["GET", "HEAD"])
async def hls_playlist(request: Request, flow_id: str) -> Response:
    body = await playback.hls(context(request), _request(request, flow_id))
    return _reply(body, HLS_TYPE)


@router.api_route("/x-tamstore/dash/{flow_id}.mpd", methods=["GET", "HEAD"])
async def dash_manifest(request: Request, flow_id: str) -> Response:
    body = await playback.dash(context(request), _request(request, flow_id))
    return _reply(body, DASH_TYPE)


@router.api_route("/x-tamstore/frames/{flow_id}.jpg", methods=["GET", "HEAD"])
async def frame(request: Request, flow_id: str) -> Response:
    """A still of a video Flow at ``at`` (a TAMS timestamp), JPEG, ``width`` pixels wide."""
    path_id(flow_id, "Flow")
    q = Query(request)
    text = q.text("at")
    if text is None:
        raise BadRequest("query parameter at: the TAMS timestamp of the frame")
    try:
        at = parse_timestamp(text)
    except InvalidTimeRange as exc:
        raise BadRequest(f"query parameter at: {exc}") from None
    width = q.integer("width", minimum=16, maximum=frames.MAX_WIDTH)
    jpeg = await frames.frame_jpeg(context(request), flow_id, at, width)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.api_route("/x-tamstore/objects/{object_id}.{ext}", methods=["GET", "HEAD"])
async def object_media(request: Request, object_id: str, ext: str) -> Response:
    url = await playback.object_redirect(context(request), object_id, Query(request).url_filter(), base_url(request))
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
