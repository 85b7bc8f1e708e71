"""The service's ASGI middleware: who is asking, settled first, then bounded request bodies.

Both are plain ASGI, not Starlette's BaseHTTPMiddleware: that one hands every
piece of a request body and of a streamed answer through a task group of its
own, which cost an upload batch a quarter of the service's CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rain.errors import RainError, TooLarge
from rain.repository.api_errors import (
    COMMIT_BODY_MAX,
    JSON_BODY_MAX,
    Page,
    db_down,
    error_response,
    for_people,
    refusal,
)
from rain.repository.models import User


class Authenticate:
    """Who is asking is settled before anything else about the request (its body included): the bearer
    token's user goes in the request's state (`request.state.user`), or the request is answered 401/403."""

    def __init__(self, app: ASGIApp, user_for_token: Callable[[str | None], User], prefix: str,
                 public: set[str]) -> None:
        self.app, self.user_for_token, self.prefix, self.public = app, user_for_token, prefix, public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(self.prefix) and path not in self.public:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            try:
                user = await anyio.to_thread.run_sync(self.user_for_token, token)
            except RainError as e:
                await error_response(e)(scope, receive, send)
                return
            except PyMongoError as e:  # the app's exception handlers do not reach a middleware
                await error_response(db_down(e))(scope, receive, send)
                return
            scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, except on paths that stream (image uploads).

    The body is read here, up to the limit, and handed on whole: a client that sends
    gigabytes of JSON, with or without a Content-Length, costs at most `limit` bytes.
    A web catalog's form is refused with `page`, as its other refusals are."""

    def __init__(self, app: ASGIApp, limit: int = JSON_BODY_MAX, streaming: str = "/api/v1/uploads/",
                 page: Page | None = None) -> None:
        self.app, self.limit, self.streaming, self.page = app, limit, streaming, page

    def _streams(self, path: str) -> bool:
        """An upload's bytes: the streamed body (/uploads/ID) and chunk batches (bounded where they are read)."""
        rest = path[len(self.streaming):] if path.startswith(self.streaming) else None
        return rest is not None and ("/" not in rest or rest.endswith("/chunks"))

    def _limit(self, path: str) -> int:
        # a commit lists every chunk of the image: 67 bytes each, 32 MiB is a 500 GiB image
        return COMMIT_BODY_MAX if path.startswith(self.streaming) and path.endswith("/commit") else self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._streams(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(scope, receive, send, limit)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        error = TooLarge(f"the request body is over the limit of {limit} bytes",
                         hint="shorten what the form sends" if self.page and for_people(scope["path"]) else
                         "send less; image bytes go to the upload URL, which has no such limit")
        await refusal(Request(scope), error, self.page, {"Connection": "close"})(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
