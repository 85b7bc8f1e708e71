"""How the service answers what it refuses: one JSON shape, declared in the schema, and bounded bodies.

Every refusal is {"error": kind, "message": one line, "hint": how to fix it}, whether it
comes from the Store, from request validation, from the router (unknown path, wrong
method) or from a body over the limit. The shape is declared for each status in the
OpenAPI schema, so clients and fuzzers can hold the service to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from rain.errors import InvalidInput, NotFound, RainError, Unreachable
from rain.repository.fields import SCHEMA_HINT, problem

JSON_BODY_MAX = 4 << 20
COMMIT_BODY_MAX = 32 << 20
"""Bytes in a request body other than an image upload's: room for a 1 MiB provenance or report, no more."""
log = logging.getLogger(__name__)


class Error(BaseModel):
    """What every refused request answers."""

    error: str
    """The kind: invalid_input, too_large, unauthorized, forbidden, not_found, conflict, ..."""
    message: str
    """One line saying what is wrong."""
    hint: str | None = None
    """How to fix it, when there is something to do."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the Error shape for these statuses."""
    return {status: {"model": Error} for status in statuses}


COMMON_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 503)
"""What any /api/v1 call may answer besides success (413 is a body too large or a quota)."""


def error_response(e: RainError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The Error answer for e; its message is kept to one line whatever raised it."""
    extra = {"WWW-Authenticate": "Bearer"} if e.http_status == 401 else {}
    headers = {**getattr(e, "headers", {}), **extra, **(headers or {})}
    body = {"error": e.kind, "message": " ".join(e.message.splitlines()), "hint": e.hint}
    return JSONResponse(body, status_code=e.http_status, headers=headers or None)


Page = Callable[[Request, RainError], Response]
"""How the web catalog answers a refusal (rain.web.pages.error_page): a page, with the same status."""


def for_people(path: str) -> bool:
    """Whether a request's path is the web catalog's (its refusals are pages), not the API's or /healthz."""
    return not path.startswith("/api/") and path != "/healthz"


def refusal(request: Request, e: RainError, page: Page | None, headers: dict[str, str] | None = None) -> Response:
    """The answer to a refused request: a page for the web catalog's paths (when `page` is given), else Error."""
    if page is not None and for_people(request.url.path):
        out = page(request, e)
        out.headers.update(headers or {})
        return out
    return error_response(e, headers)


def install(app: FastAPI, page: Page | None = None) -> None:
    """Answer every refusal in the Error shape (and keep the service's own failures 5xx); outside
    /api/ and /healthz, with `page` when given (the web catalog's pages answer people, not programs)."""

    def answer(request: Request, e: RainError, headers: dict[str, str] | None = None) -> Response:
        return refusal(request, e, page, headers)

    @app.exception_handler(RainError)
    async def _rain_error(request: Request, e: RainError) -> Response:
        return answer(request, e)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        message = "the request body is not valid JSON" if first.get("type") == "json_invalid" else problem(e)
        return answer(request, InvalidInput(message, hint=SCHEMA_HINT))

    @app.exception_handler(ValidationError)
    async def _bad_value(request: Request, e: ValidationError) -> Response:
        return answer(request, InvalidInput(problem(e), hint=SCHEMA_HINT))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> Response:
        """The router's own refusals (no such path, wrong method, unreadable body) in the Error shape."""
        error: RainError
        if e.status_code == 404 and request.url.path.startswith("/api/"):
            error = NotFound(f"no such API path {request.url.path}", hint="see the API schema at /api/v1/docs")
        elif e.status_code == 404:
            error = NotFound(f"no page {request.url.path}", hint="start from the catalog")
        else:
            error = InvalidInput(f"{request.method} {request.url.path}: {e.detail}", hint=SCHEMA_HINT)
            error.http_status = e.status_code
        return answer(request, error, dict(e.headers or {}))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect) -> Response:
        log.warning("client went away during %s %s; the partial upload was undone", request.method,
                    request.url.path)
        return Response(status_code=499)

    @app.exception_handler(PyMongoError)
    async def _db_down(request: Request, e: PyMongoError) -> Response:
        return answer(request, db_down(e))


def db_down(e: PyMongoError) -> Unreachable:
    """503 naming the failure: the refusal of any request the database failed (also where the app's
    exception handlers do not reach, such as the authentication middleware)."""
    return Unreachable(f"the repository database failed: {type(e).__name__}",
                       hint="try again; tell the operator if it persists")
