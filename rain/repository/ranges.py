"""The data URL's HTTP: Range and If-Range for resuming, ETag and If-None-Match for caching, HEAD.

The ETag is the image's sha256 in quotes: the same bytes always have it, so a
client that holds them can ask with If-None-Match and get 304 instead of the
bytes, and a resumed download (Range + If-Range) gets the rest only if the
image it started on is still the one behind the URL.
"""

from __future__ import annotations

import re

from fastapi.responses import Response, StreamingResponse

from rain.errors import InvalidInput, RainError
from rain.repository.models import Image
from rain.repository.store import Store

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _RangeNotSatisfiable(RainError):
    http_status = 416
    kind = "invalid_input"

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the image ({size} bytes)",
                         hint="resume from an offset below the image size")
        self.headers = {"Content-Range": f"bytes */{size}"}  # RFC 9110 15.5.17: the current length


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single byte range, None for the whole image."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise InvalidInput(f"unsupported Range {header[:80]!r}", hint="send one range such as bytes=1000-")
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:  # suffix: the last N bytes
        start, end = max(0, size - int(m.group(2))), size - 1
    if start >= size or end < start:
        raise _RangeNotSatisfiable(size)
    return start, min(end, size - 1)


def _etags(header: str) -> list[str]:
    """The entity tags of an If-None-Match list, weak ones compared by their opaque part."""
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def _headers(image: Image, length: int) -> dict[str, str]:
    return {"ETag": f'"{image.sha256}"', "Accept-Ranges": "bytes", "Content-Length": str(length),
            "Content-Disposition": f'attachment; filename="{image.name}.{image.format}"'}


def download(s: Store, image_id: str, headers: dict[str, str], head: bool = False) -> Response:
    """The answer to GET or HEAD on an image's data URL.

    Only a GET that sends bytes counts as an access; HEAD and 304 read the record alone."""
    record = s.show(image_id)
    etag = f'"{record.sha256}"'
    none_match = headers.get("if-none-match")
    if none_match and (none_match.strip() == "*" or etag in _etags(none_match)):
        return Response(status_code=304, headers={"ETag": etag, "Accept-Ranges": "bytes"})
    if_range = headers.get("if-range")
    wanted = _parse_range(headers.get("range"), record.size) if not if_range or if_range.strip() == etag else None
    start, end = wanted if wanted else (0, record.size - 1)
    length = end - start + 1 if record.size else 0
    if head:
        return Response(status_code=206 if wanted else 200, headers=_headers(record, length),
                        media_type="application/octet-stream")
    image, chunks = s.open(image_id, start, length)
    out = _headers(image, length)
    if wanted:
        out["Content-Range"] = f"bytes {start}-{end}/{image.size}"
    return StreamingResponse(chunks, status_code=206 if wanted else 200, headers=out,
                             media_type="application/octet-stream")


DATA_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The image's bytes; ETag is their sha256 in quotes"},
    206: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The requested byte range (Range, honoured if If-Range names the current ETag)"},
    304: {"description": "If-None-Match named the current ETag: the client has these bytes"},
}
