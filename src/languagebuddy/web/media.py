"""``GET /media/{token}``: hosted outbound files (LINE voice replies), short-lived and signed.

Thin: the media host checks the token and finds the bytes; the route maps its answers to HTTP
(403 for a token we did not sign, 410 once it has expired) and never logs the token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from languagebuddy.media.hosting import MediaGone, MediaTokenInvalid

router = APIRouter()


@router.api_route("/media/{token}", methods=["GET", "HEAD"], include_in_schema=False)
async def hosted_media(token: str, request: Request) -> Response:
    host = request.app.state.services.media_host
    if host is None:
        return Response(b"no hosted media here", status_code=404, media_type="text/plain")
    try:
        data, mime, seconds_left = await host.open(token)
    except MediaTokenInvalid:
        return Response(b"invalid media token", status_code=403, media_type="text/plain")
    except MediaGone:
        return Response(b"this media has expired", status_code=410, media_type="text/plain")
    headers = {
        "Cache-Control": f"private, max-age={max(0, int(seconds_left))}",
        "X-Content-Type-Options": "nosniff",
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=200, media_type=mime, headers=headers)
    return Response(data, media_type=mime, headers=headers)
