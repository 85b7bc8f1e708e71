"""The repository service: a REST API under /api/v1 over store.Store (FastAPI + uvicorn).

Every request acts as the user its bearer token belongs to; all rules are the
Store's. Uploads are two requests: POST /images reserves quota and a record
(so a refusal arrives before any byte is sent), PUT /uploads/{id} streams the
bytes. Downloads stream, honour Range and carry the sha256 as ETag (ranges.py).
Every refusal is a 4xx in one JSON shape, and JSON bodies are bounded (api_errors.py);
what a field may hold is declared once in fields.py and models.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.from_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from pymongo.database import Database

from rain import __version__
from rain.config import Settings
from rain.errors import InvalidInput
from rain.image import sbom
from rain.repository.accounts import Accounts
from rain.repository.api_errors import COMMON_ERRORS, error_responses, install
from rain.repository.chunk_routes import download_router, upload_router
from rain.repository.connect import open_database, store_for
from rain.repository.fields import (
    LIST_MAX,
    SCHEMA_HINT,
    ByteCount,
    Document,
    HistoryLimit,
    Pattern,
    Printable,
    Sha256,
    TargetName,
    problem,
)
from rain.repository.launch_routes import launch_router
from rain.repository.middleware import Authenticate, BodyLimit
from rain.repository.models import (
    Event,
    GcReport,
    Image,
    ImageChanges,
    ImageId,
    ImageMeta,
    ImageQuery,
    ImageSummary,
    ReproductionIn,
    Role,
    StorageReport,
    User,
    UserName,
)
from rain.repository.ranges import DATA_RESPONSES, _parse_range, _RangeNotSatisfiable, download
from rain.repository.records import RULE_RE
from rain.repository.store import Store
from rain.repository.token_routes import token_router

API = "/api/v1"
log = logging.getLogger(__name__)
__all__ = ["_RangeNotSatisfiable", "_parse_range", "create_app", "serve"]


class UploadRequest(BaseModel):
    meta: ImageMeta
    size: ByteCount
    sha256: Sha256 | None = None


class UploadTicket(BaseModel):
    upload_id: str
    upload_url: str


class Users(BaseModel):
    users: list[UserName] = Field(min_length=1, max_length=LIST_MAX)


class NewUser(BaseModel):
    name: UserName
    role: Role = Role.USER
    quota_bytes: ByteCount | None = None


class Quota(BaseModel):
    quota_bytes: ByteCount | None


class RoleChange(BaseModel):
    role: Role


class Suspension(BaseModel):
    suspended: bool


SiteName = Annotated[str, Field(max_length=128), Printable()]
SiteQuery = Annotated[str, Query(max_length=128), Printable()]


class RegistrationIn(BaseModel):
    target: TargetName
    site: SiteName = ""
    remote_id: Annotated[str, Field(max_length=512), Printable()]
    detail: Annotated[dict[str, Any], Document("registration detail")] = {}


class ExportIn(BaseModel):
    target: TargetName
    detail: Annotated[dict[str, Any], Document("export detail")] = {}


class RuleAcceptance(BaseModel):
    target: TargetName
    rule: Annotated[str, Pattern(RULE_RE, "rule id", "rule ids are like root-login")]


VettingReport = Annotated[dict[str, Any], Document("vetting report", schema={
    "required": ["verdict"], "properties": {"verdict": {"enum": ["pass", "fail"]}}})]
"""A vetting report as the registrar sends it: the Store checks the same (records.py)."""


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


def create_app(db: Database, upload_grace: int = 600) -> FastAPI:
    app = FastAPI(title="Rain image repository", version=__version__,
                  description="Store, find, share and fetch OS images.",
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None)
    accounts = Accounts(db)
    from rain.web import pages  # the web catalog at /: its templates load only with the service

    install(app, pages.error_page)
    app.add_middleware(BodyLimit, page=pages.error_page)
    public = {f"{API}/openapi.json", f"{API}/docs", f"{API}/docs/oauth2-redirect"}
    # added last, so outermost: a stranger's body is never read
    app.add_middleware(Authenticate, user_for_token=accounts.user_for_token, prefix=API + "/", public=public)

    async def store(request: Request) -> Store:  # no I/O: in the event loop, not a thread hop per request
        return store_for(db, request.state.user.name, upload_grace, known=request.state.user)

    @app.get("/healthz", tags=["service"], responses=error_responses(503))
    def healthz() -> dict[str, str]:
        """503 with the reason when the database cannot read or write (a full disk still answers ping)."""
        from rain.repository.connect import check_health

        check_health(db)
        return {"status": "ok", "version": __version__}

    api = APIRouter(prefix=API, responses=COMMON_ERRORS)

    @api.get("/whoami", response_model=User)
    def whoami(s: Store = Depends(store)) -> User:
        return s.whoami()

    @api.get("/images", response_model=list[ImageSummary],
             openapi_extra={"parameters": _query_parameters(ImageQuery)})
    def list_images(request: Request, s: Store = Depends(store)) -> list[ImageSummary]:
        """The images you may read that match, newest first unless `sort` says otherwise: each without
        its provenance and vetting reports (GET /images/{image_id} gives them)."""
        params = dict(request.query_params)
        try:
            query = ImageQuery.model_validate(params)
        except ValidationError as e:
            raise InvalidInput(f"bad query parameter {problem(e)}", hint=SCHEMA_HINT) from e
        return s.list(query)

    @api.post("/images", response_model=UploadTicket, status_code=201)
    def begin_upload(body: UploadRequest, s: Store = Depends(store)) -> UploadTicket:
        upload_id = s.begin_upload(body.meta, body.size)
        return UploadTicket(upload_id=upload_id, upload_url=f"{API}/uploads/{upload_id}")

    @api.put("/uploads/{upload_id}", response_model=Image, openapi_extra=_UPLOAD_BODY)
    async def finish_upload(upload_id: ImageId, request: Request, s: Store = Depends(store)) -> Image:
        sha256 = request.headers.get("x-rain-sha256")
        reader = _BodyReader(request)
        return await anyio.to_thread.run_sync(
            lambda: s.finish_upload(upload_id, reader, sha256))  # type: ignore[arg-type]

    @api.get("/images/{image_id}", response_model=Image)
    def show(image_id: ImageId, s: Store = Depends(store)) -> Image:
        return s.show(image_id)

    @api.get("/images/{image_id}/sbom", response_class=Response,
             responses={200: {"description": "SPDX 2.3 JSON (rain.image.sbom)", "content": {sbom.MEDIA_TYPE: {}}}})
    def image_sbom(image_id: ImageId, s: Store = Depends(store)) -> Response:
        """The image's SBOM, the bytes `fg-image sbom ID` prints; 404 for an image no generate build made."""
        image = s.show(image_id)
        return Response(sbom.sbom_for(image.id, image.provenance, image.sha256, image.format),
                        media_type=sbom.MEDIA_TYPE)

    @api.get("/images/{image_id}/data", response_class=Response, responses={**DATA_RESPONSES, **error_responses(416)})
    def data(image_id: ImageId, request: Request, s: Store = Depends(store)) -> Response:
        """The image's bytes; see rain.repository.ranges for Range, If-Range and If-None-Match."""
        return download(s, image_id, dict(request.headers))

    @api.head("/images/{image_id}/data", response_class=Response, responses={**DATA_RESPONSES, **error_responses(416)})
    def data_headers(image_id: ImageId, request: Request, s: Store = Depends(store)) -> Response:
        """The headers a GET would answer with (size, ETag), without the bytes or counting an access."""
        return download(s, image_id, dict(request.headers), head=True)

    @api.patch("/images/{image_id}", response_model=Image)
    def modify(image_id: ImageId, changes: ImageChanges, s: Store = Depends(store)) -> Image:
        return s.modify(image_id, changes)

    @api.delete("/images/{image_id}", response_model=Image)
    def remove(image_id: ImageId, force: bool = False, s: Store = Depends(store)) -> Image:
        return s.remove(image_id, force)

    @api.post("/images/{image_id}/share", response_model=Image)
    def share(image_id: ImageId, body: Users, s: Store = Depends(store)) -> Image:
        return s.share(image_id, body.users)

    @api.post("/images/{image_id}/unshare", response_model=Image)
    def unshare(image_id: ImageId, body: Users, s: Store = Depends(store)) -> Image:
        return s.unshare(image_id, body.users)

    @api.put("/images/{image_id}/vetting/{target}", response_model=Image)
    def set_vetting(image_id: ImageId, target: TargetName, report: VettingReport, s: Store = Depends(store)) -> Image:
        return s.set_vetting(image_id, target, report)

    @api.post("/images/{image_id}/accepted-rules", response_model=Image)
    def accept_rule(image_id: ImageId, body: RuleAcceptance, s: Store = Depends(store)) -> Image:
        return s.accept_rule(image_id, body.target, body.rule)

    @api.post("/images/{image_id}/registrations", response_model=Image)
    def add_registration(image_id: ImageId, body: RegistrationIn, s: Store = Depends(store)) -> Image:
        return s.add_registration(image_id, body.target, body.site, body.remote_id, body.detail)

    @api.post("/images/{image_id}/exports", response_model=Image)
    def record_export(image_id: ImageId, body: ExportIn, s: Store = Depends(store)) -> Image:
        return s.record_export(image_id, body.target, body.detail)

    @api.post("/images/{image_id}/reproductions", response_model=Image)
    def add_reproduction(image_id: ImageId, body: ReproductionIn, s: Store = Depends(store)) -> Image:
        return s.add_reproduction(image_id, body.model_dump())

    @api.delete("/images/{image_id}/registrations/{target}", response_model=Image)
    def remove_registration(image_id: ImageId, target: TargetName, site: SiteQuery = "",
                            s: Store = Depends(store)) -> Image:
        return s.remove_registration(image_id, target, site)

    @api.get("/history", response_model=list[Event])
    def history(image_id: ImageId | None = None, user: UserName | None = None,
                limit: Annotated[HistoryLimit, Query()] = 100, s: Store = Depends(store)) -> list[Event]:
        return s.history(image_id, user, limit)

    @api.get("/users", response_model=list[User])
    def list_users(s: Store = Depends(store)) -> list[User]:
        return s.list_users()

    @api.post("/users", response_model=User, status_code=201)
    def add_user(body: NewUser, s: Store = Depends(store)) -> User:
        return s.add_user(body.name, body.role, body.quota_bytes)

    @api.delete("/users/{name}", status_code=204)
    def remove_user(name: UserName, s: Store = Depends(store)) -> None:
        s.remove_user(name)

    @api.put("/users/{name}/quota", response_model=User)
    def set_quota(name: UserName, body: Quota, s: Store = Depends(store)) -> User:
        return s.set_quota(name, body.quota_bytes)

    @api.put("/users/{name}/role", response_model=User)
    def set_role(name: UserName, body: RoleChange, s: Store = Depends(store)) -> User:
        return s.set_role(name, body.role)

    @api.put("/users/{name}/suspended", response_model=User)
    def suspend(name: UserName, body: Suspension, s: Store = Depends(store)) -> User:
        return s.suspend(name, body.suspended)

    api.include_router(token_router(store))  # /users/{name}/tokens: list, create, revoke one or all
    api.include_router(upload_router(store))  # /uploads/{id}/needs, chunks, commit: delta uploads
    api.include_router(download_router(store))  # /images/{id}/chunks[/data]: delta downloads
    api.include_router(launch_router(store))  # /launches: what `fg-image launch` started, per user

    @api.post("/gc", response_model=GcReport)
    def gc(s: Store = Depends(store)) -> GcReport:
        return s.gc()

    @api.get("/storage", response_model=StorageReport)
    def storage(s: Store = Depends(store)) -> StorageReport:
        """Logical size of all images, bytes stored after dedup, and their ratio (administrators)."""
        return s.storage()

    app.include_router(api)
    pages.mount(app, db, upload_grace)
    return app


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for a model the handler validates itself (so the schema shows them)."""
    schema = model.model_json_schema()
    defs = {f"#/$defs/{name}": d for name, d in schema.get("$defs", {}).items()}

    def own(prop: dict[str, Any]) -> dict[str, Any]:  # optional → the type; a $defs reference → inline
        prop = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)
        return dict(defs.get(prop.get("$ref", ""), prop))

    return [{"name": name, "in": "query", "required": False, "schema": own(prop)}
            for name, prop in schema["properties"].items()]


_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
"""The upload's bytes: streamed to the Store as they arrive, never parsed (so not a FastAPI body)."""


def serve(settings: Settings, host: str, port: int, tls_cert: Path | None = None,
          tls_key: Path | None = None) -> None:
    """Run the service in the foreground until interrupted."""
    import uvicorn

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
