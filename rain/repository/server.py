"""The repository service: a REST API under /api/v1 over store.Store (FastAPI + uvicorn).

Every request acts as the user its bearer token belongs to; all rules are the
Store's. Uploads are two requests: POST /images reserves quota and a record
(so a refusal arrives before any byte is sent), PUT /uploads/{id} streams the
bytes. Downloads stream, honour Range and carry the sha256 as ETag.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from pymongo.database import Database
from pymongo.errors import PyMongoError
from starlette.requests import ClientDisconnect

from rain import __version__
from rain.config import Settings
from rain.errors import InvalidInput, RainError
from rain.repository.accounts import Accounts
from rain.repository.models import (
    Event,
    GcReport,
    Image,
    ImageChanges,
    ImageMeta,
    ImageQuery,
    Role,
    User,
    field_path,
)
from rain.repository.store import Store

API = "/api/v1"
log = logging.getLogger(__name__)


class UploadRequest(BaseModel):
    meta: ImageMeta
    size: int
    sha256: str | None = None


class UploadTicket(BaseModel):
    upload_id: str
    upload_url: str


class Users(BaseModel):
    users: list[str]


class NewUser(BaseModel):
    name: str
    role: Role = Role.USER
    quota_bytes: int | None = None


class Quota(BaseModel):
    quota_bytes: int | None


class RoleChange(BaseModel):
    role: Role


class Suspension(BaseModel):
    suspended: bool


class Token(BaseModel):
    token: str


class RegistrationIn(BaseModel):
    target: str
    site: str = ""
    remote_id: str
    detail: dict[str, Any] = {}


class RuleAcceptance(BaseModel):
    target: str
    rule: str


def _error(e: RainError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.http_status == 401 else None
    return JSONResponse({"error": e.kind, "message": e.message, "hint": e.hint},
                        status_code=e.http_status, headers=headers)


class _BodyReader:
    """A blocking file-like view of the request body, read from a worker thread."""

    def __init__(self, request: Request) -> None:
        self._stream = request.stream()
        self._buffer = bytearray()
        self._done = False

    async def _next(self) -> bytes | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n and not self._done:
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single byte range, None for the whole image."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise InvalidInput(f"unsupported Range {header!r}", hint="send one range such as bytes=1000-")
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:  # suffix: the last N bytes
        start, end = max(0, size - int(m.group(2))), size - 1
    if start >= size or end < start:
        raise _RangeNotSatisfiable(size)
    return start, min(end, size - 1)


class _RangeNotSatisfiable(RainError):
    http_status = 416
    kind = "invalid_input"

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the image ({size} bytes)",
                         hint="resume from an offset below the image size")


def create_app(db: Database, upload_grace: int = 600) -> FastAPI:
    app = FastAPI(title="Rain image repository", version=__version__,
                  description="Store, find, share and fetch OS images.",
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None)
    accounts = Accounts(db)

    public = {f"{API}/openapi.json", f"{API}/docs", f"{API}/docs/oauth2-redirect"}

    @app.middleware("http")
    async def _authenticate(request: Request, call_next: Any) -> Response:
        """Who is asking is settled before anything else about the request (its body included)."""
        if request.url.path.startswith(API + "/") and request.url.path not in public:
            auth = request.headers.get("authorization", "")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            try:
                request.state.user = await anyio.to_thread.run_sync(accounts.user_for_token, token)
            except RainError as e:
                return _error(e)
        response: Response = await call_next(request)
        return response

    def store(request: Request) -> Store:
        return Store(db, request.state.user.name, upload_grace=upload_grace)

    @app.exception_handler(RainError)
    async def _rain_error(request: Request, e: RainError) -> JSONResponse:
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = field_path(first.get("loc", ()))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, where = "the request body is not valid JSON", ""
        return _error(InvalidInput(f"{where}: {msg}" if where else msg,
                                   hint=f"see the API schema at {API}/openapi.json"))

    @app.exception_handler(ValidationError)
    async def _bad_value(request: Request, e: ValidationError) -> JSONResponse:
        first = e.errors()[0]
        return _error(InvalidInput(f"{field_path(first['loc'])}: {first['msg']}"))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect) -> Response:
        log.warning("client went away during %s %s; the partial upload was undone", request.method,
                    request.url.path)
        return Response(status_code=499)

    @app.exception_handler(PyMongoError)
    async def _db_down(request: Request, e: PyMongoError) -> JSONResponse:
        return JSONResponse({"error": "unreachable", "message": f"the repository database failed: "
                             f"{type(e).__name__}", "hint": "try again; tell the operator if it persists"},
                            status_code=503)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        db.command("ping")
        return {"status": "ok", "version": __version__}

    api = APIRouter(prefix=API)

    @api.get("/whoami", response_model=User)
    def whoami(s: Store = Depends(store)) -> User:
        return s.whoami()

    @api.get("/images", response_model=list[Image])
    def list_images(request: Request, s: Store = Depends(store)) -> list[Image]:
        params = dict(request.query_params)
        try:
            query = ImageQuery.model_validate(params)
        except ValidationError as e:
            first = e.errors()[0]
            raise InvalidInput(f"bad query parameter {field_path(first['loc'])}: {first['msg']}") from e
        return s.list(query)

    @api.post("/images", response_model=UploadTicket, status_code=201)
    def begin_upload(body: UploadRequest, s: Store = Depends(store)) -> UploadTicket:
        upload_id = s.begin_upload(body.meta, body.size)
        return UploadTicket(upload_id=upload_id, upload_url=f"{API}/uploads/{upload_id}")

    @api.put("/uploads/{upload_id}", response_model=Image)
    async def finish_upload(upload_id: str, request: Request, s: Store = Depends(store)) -> Image:
        sha256 = request.headers.get("x-rain-sha256")
        reader = _BodyReader(request)
        return await anyio.to_thread.run_sync(
            lambda: s.finish_upload(upload_id, reader, sha256))  # type: ignore[arg-type]

    @api.get("/images/{image_id}", response_model=Image)
    def show(image_id: str, s: Store = Depends(store)) -> Image:
        return s.show(image_id)

    @api.get("/images/{image_id}/data", response_class=StreamingResponse,
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {}})
    def download(image_id: str, request: Request, s: Store = Depends(store)) -> StreamingResponse:
        record = s.show(image_id)
        wanted = _parse_range(request.headers.get("range"), record.size)
        start, end = wanted if wanted else (0, record.size - 1)
        length = end - start + 1 if record.size else 0
        image, chunks = s.open(image_id, start, length)
        headers = {"ETag": f'"{image.sha256}"', "Accept-Ranges": "bytes", "Content-Length": str(length),
                   "Content-Disposition": f'attachment; filename="{image.name}.{image.format}"'}
        status = 200
        if wanted:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{image.size}"
        return StreamingResponse(chunks, status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    @api.patch("/images/{image_id}", response_model=Image)
    def modify(image_id: str, changes: ImageChanges, s: Store = Depends(store)) -> Image:
        return s.modify(image_id, changes)

    @api.delete("/images/{image_id}", response_model=Image)
    def remove(image_id: str, force: bool = False, s: Store = Depends(store)) -> Image:
        return s.remove(image_id, force)

    @api.post("/images/{image_id}/share", response_model=Image)
    def share(image_id: str, body: Users, s: Store = Depends(store)) -> Image:
        return s.share(image_id, body.users)

    @api.post("/images/{image_id}/unshare", response_model=Image)
    def unshare(image_id: str, body: Users, s: Store = Depends(store)) -> Image:
        return s.unshare(image_id, body.users)

    @api.put("/images/{image_id}/vetting/{target}", response_model=Image)
    def set_vetting(image_id: str, target: str, report: dict[str, Any], s: Store = Depends(store)) -> Image:
        return s.set_vetting(image_id, target, report)

    @api.post("/images/{image_id}/accepted-rules", response_model=Image)
    def accept_rule(image_id: str, body: RuleAcceptance, s: Store = Depends(store)) -> Image:
        return s.accept_rule(image_id, body.target, body.rule)

    @api.post("/images/{image_id}/registrations", response_model=Image)
    def add_registration(image_id: str, body: RegistrationIn, s: Store = Depends(store)) -> Image:
        return s.add_registration(image_id, body.target, body.site, body.remote_id, body.detail)

    @api.delete("/images/{image_id}/registrations/{target}", response_model=Image)
    def remove_registration(image_id: str, target: str, site: str = "", s: Store = Depends(store)) -> Image:
        return s.remove_registration(image_id, target, site)

    @api.get("/history", response_model=list[Event])
    def history(image_id: str | None = None, user: str | None = None, limit: int = 100,
                s: Store = Depends(store)) -> list[Event]:
        return s.history(image_id, user, limit)

    @api.get("/users", response_model=list[User])
    def list_users(s: Store = Depends(store)) -> list[User]:
        return s.list_users()

    @api.post("/users", response_model=User, status_code=201)
    def add_user(body: NewUser, s: Store = Depends(store)) -> User:
        return s.add_user(body.name, body.role, body.quota_bytes)

    @api.delete("/users/{name}", status_code=204)
    def remove_user(name: str, s: Store = Depends(store)) -> None:
        s.remove_user(name)

    @api.put("/users/{name}/quota", response_model=User)
    def set_quota(name: str, body: Quota, s: Store = Depends(store)) -> User:
        return s.set_quota(name, body.quota_bytes)

    @api.put("/users/{name}/role", response_model=User)
    def set_role(name: str, body: RoleChange, s: Store = Depends(store)) -> User:
        return s.set_role(name, body.role)

    @api.put("/users/{name}/suspended", response_model=User)
    def suspend(name: str, body: Suspension, s: Store = Depends(store)) -> User:
        return s.suspend(name, body.suspended)

    @api.post("/users/{name}/tokens", response_model=Token, status_code=201)
    def issue_token(name: str, s: Store = Depends(store)) -> Token:
        return Token(token=s.issue_token(name))

    @api.post("/gc", response_model=GcReport)
    def gc(s: Store = Depends(store)) -> GcReport:
        return s.gc()

    app.include_router(api)
    return app


def serve(settings: Settings, host: str, port: int, tls_cert: Path | None = None,
          tls_key: Path | None = None) -> None:
    """Run the service in the foreground until interrupted."""
    import uvicorn

    from rain.repository.connect import open_database

    if bool(tls_cert) != bool(tls_key):
        raise InvalidInput("TLS needs both --tls-cert and --tls-key", hint="pass both, or neither for plain HTTP")
    for path in (tls_cert, tls_key):
        if path and not path.is_file():
            raise InvalidInput(f"TLS file {path} does not exist", hint="give the PEM certificate and key paths")
    db = open_database(settings)
    Store(db, "", upload_grace=settings.upload_grace).collect_stale_uploads()
    app = create_app(db, settings.upload_grace)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as e:
        raise InvalidInput(f"cannot listen on {host}:{port}: {e.strerror}",
                           hint="pick another --port or stop what uses it") from e
