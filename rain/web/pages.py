"""The web catalog's pages and forms: catalog, image, me, admin, sign-in (routes under `/`).

A page reads through a Store acting as the signed-in user (or, for a visitor, as nobody: public images
only), so it sees exactly what the API and the CLI would show that user. Refusals are pages with the
API's status: an image you may not read is 404, as one that does not exist. Every form posts back its
session's CSRF token and must come from this origin (sessions.check_form); a changing form answers
with a redirect (303), so reloading a page never posts it again; the one exception, the new-token form,
answers with the token (shown once, never in a URL), and carries the token list it was shown with, so
that the same form sent again makes nothing.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError
from pymongo.database import Database
from starlette.concurrency import run_in_threadpool

from rain import __version__
from rain.config import parse_size
from rain.errors import Forbidden, InvalidInput, NotFound, RainError, Unauthorized
from rain.register.targets.base import TargetName
from rain.repository.connect import health_problem, store_for
from rain.repository.fields import LIST_MAX, problem
from rain.repository.models import ImageChanges, ImageQuery, Role, TokenInfo, User, UserStatus
from rain.repository.ranges import download
from rain.repository.store import Store
from rain.sizes import human
from rain.web import lineage
from rain.web.sessions import COOKIE, LIFETIME, Session, Sessions, check_form

PAGE = 50
"""Images on one catalog page."""
FILTERS = ("search", "os_family", "release", "arch", "tag", "owner", "visibility", "verdict", "registered")
"""The catalog's filters, by their query parameter (and ImageQuery field)."""
SORTS = {"-created": "newest", "created": "oldest", "name": "name", "-size": "largest", "owner": "owner",
         "-access_count": "most used"}
ANCESTORS_MAX = 8
FORM_FIELDS_MAX = 64
DIGITS = re.compile(r"[0-9]{1,6}")
STALE_TOKEN_FORM = ("No token was made: that form was sent before (a reload?) or the token list changed since. "
                    "A new token is shown only once; revoke one you did not copy.")
NOBODY = User(name="", role=Role.USER)
"""Who a visitor who has not signed in acts as: no image is theirs or shared with them."""

_env = Environment(loader=PackageLoader("rain.web", "templates"), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["human"] = lambda n: human(n) if n is not None else "no limit"
_env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "-"


def _exact(n: int | None) -> str:
    """A size as the quota field shows it, exactly (parse_size reads it back to the same bytes)."""
    if n is None:
        return "none"
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


_env.filters["exact"] = _exact


def mount(app: FastAPI, db: Database, upload_grace: int) -> None:
    """Add the pages to the service's app (the API's routes are already there)."""
    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")
    app.include_router(router(db, upload_grace))


def error_page(request: Request, e: RainError) -> HTMLResponse:
    """A refusal as a page a person reads: what is wrong and what to do, with the API's status."""
    session = getattr(request.state, "session", None)
    return _render("error.html.j2", request, session, status=e.http_status, code=e.http_status, error=e)


def _render(template: str, request: Request, session: Session | None, status: int = 200,
            **context: Any) -> HTMLResponse:
    """The page, with the time the server took for it since the session was looked up in a Server-Timing
    header (a browser's developer tools show it; bench/repository.py reads it)."""
    context.setdefault("done", session.flash if session else "")
    html = _env.get_template(template).render(
        me=session.user if session else None, csrf=session.csrf if session else "",
        admin=bool(session and session.user.role == Role.ADMIN), path=request.url.path, version=__version__,
        **context)
    started = getattr(request.state, "started", None)
    timing = {"Server-Timing": f"app;dur={(time.perf_counter() - started) * 1000:.1f}"} if started else {}
    return HTMLResponse(html, status_code=status, headers={**timing,
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                                   " frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


async def _form(request: Request, session: Session | None) -> dict[str, str]:
    """The posted form's fields, once it passed the origin and CSRF checks."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidInput("this page takes forms only", hint="send the form from the page")
    body = (await request.body()).decode("utf-8", "replace")
    try:
        form = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX))
    except ValueError:
        raise InvalidInput("the form has too many fields", hint="send the form from the page") from None
    check_form(request, session, form)
    return form


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def router(db: Database, upload_grace: int) -> APIRouter:
    sessions = Sessions(db)
    pages = APIRouter(include_in_schema=False)

    def session(request: Request) -> Session | None:
        request.state.started = time.perf_counter()
        found = sessions.find(request.cookies.get(COOKIE))
        request.state.session = found
        return found

    def store(s: Session | None) -> Store:
        return store_for(db, s.user.name, upload_grace, known=s.user) if s else store_for(db, "", upload_grace,
                                                                                          known=NOBODY)

    def signed_in(s: Session | None) -> Session:
        if s is None:
            raise Unauthorized("sign in first", hint="sign in with a repository token at /signin")
        return s

    def admin_session(s: Session | None) -> Session:
        if s is None or s.user.role != Role.ADMIN:
            raise Forbidden("this page is for administrators", hint="sign in as an administrator")
        return s

    # -- the catalog ------------------------------------------------------------------------------

    @pages.get("/", response_class=HTMLResponse)
    def catalog(request: Request, s: Session | None = Depends(session)) -> HTMLResponse:
        params = {k: v for k, v in request.query_params.items()
                  if k in (*FILTERS, "sort", "page", "after", "before") and v}
        number = params.pop("page", "1")
        if not DIGITS.fullmatch(number) or not 1 <= int(number) <= 10_000:
            raise InvalidInput(f"bad page number {number[:20]!r}", hint="pages are numbered from 1")
        page_no = int(number)
        # "next" carries the last image shown and "previous" the first: a page is read from there on, as
        # cheaply as the first page (by skipping, page 200 of 10,000 images took 1.7 s); a page number
        # alone (a typed URL) skips
        cursor: dict[str, str] = {k: params.pop(k) for k in ("after", "before") if k in params}
        where: dict[str, Any] = dict(cursor) if cursor else {"skip": (page_no - 1) * PAGE}
        try:
            query = ImageQuery.model_validate({**params, "limit": PAGE + 1, **where})
        except ValidationError as e:
            raise InvalidInput(f"bad filter {problem(e)}", hint="pick the filters from the form") from e
        found = store(s).list(query)
        # one more than a page says whether there is another beyond it (the last one read, the furthest)
        more = len(found) > PAGE
        shown = (found[1:] if more else found) if "before" in cursor else found[:PAGE]
        if "before" in cursor:
            newer, older = more, True
        else:
            newer, older = page_no > 1, more

        def link(page: int, **more_params: str) -> str:
            return "/?" + urlencode({**params, "page": str(page), **(more_params if page > 1 else {})})
        return _render("catalog.html.j2", request, s, images=shown, params=params, page=page_no, more=more,
                       newer=link(page_no - 1, before=shown[0].id) if newer and shown and page_no > 1 else None,
                       older=link(page_no + 1, after=shown[-1].id) if older and shown else None,
                       sorts=SORTS, targets=[t.value for t in TargetName])

    # -- one image --------------------------------------------------------------------------------

    @pages.get("/images/{image_id}", response_class=HTMLResponse)
    def image_page(image_id: str, request: Request, s: Session | None = Depends(session)) -> HTMLResponse:
        repo = store(s)
        image = repo.show(image_id)
        ancestors: list[lineage.Node] = []
        parent = image.parent
        while parent and len(ancestors) < ANCESTORS_MAX:
            try:
                above = repo.show(parent)
            except NotFound:  # removed, or not the viewer's to read: named by its id only
                ancestors.append(lineage.Node(parent, "(not visible to you)", link=False))
                break
            ancestors.append(lineage.Node(above.id, above.name))
            parent = above.parent
        derived = repo.list(ImageQuery(parent=image.id, limit=lineage.ROW_MAX + 1))
        graph = lineage.draw(list(reversed(ancestors)), lineage.Node(image.id, image.name),
                             [lineage.Node(d.id, d.name) for d in derived[:lineage.ROW_MAX]],
                             more=max(0, len(derived) - lineage.ROW_MAX))
        provenance = image.provenance or {}  # the uploader's: only lists are shown as lists
        packages = [p for p in _listed(provenance.get("packages")) if isinstance(p, dict)]
        changes = [str(c) for c in _listed(provenance.get("changes"))]
        reports = {t: {**r, "findings": [f for f in _listed(r.get("findings")) if isinstance(f, dict)]}
                   for t, r in image.vetting.items() if isinstance(r, dict)}
        history = repo.history(image.id, limit=50) if s else []  # a visitor sees no one's doings
        owner = s is not None and (s.user.name == image.owner or s.user.role == Role.ADMIN)
        return _render("image.html.j2", request, s, image=image, provenance=provenance, packages=packages,
                       changes=changes, reports=reports, history=history, graph=graph, owner=owner)

    @pages.get("/images/{image_id}/download")
    def image_download(image_id: str, request: Request, s: Session | None = Depends(session)) -> Response:
        """The bytes, streamed, resumable with Range (as the API's data URL), under the session's rules."""
        return download(store(s), image_id, dict(request.headers))

    def image_form(path: str, change: Callable[[Store, str, dict[str, str]], str]) -> None:
        @pages.post(f"/images/{{image_id}}/{path}")
        async def post(image_id: str, request: Request, s: Session | None = Depends(session)) -> Response:
            form = await _form(request, signed_in(s))
            done = await run_in_threadpool(change, store(s), image_id, form)
            await run_in_threadpool(sessions.flash, request.cookies.get(COOKIE), done)
            return _back("/" if path == "remove" else f"/images/{image_id}")

    def share(repo: Store, image_id: str, form: dict[str, str]) -> str:
        users = form.get("users", "").replace(",", " ").split()
        if not users or len(users) > LIST_MAX:
            raise InvalidInput(f"name who to share with: 1 to {LIST_MAX} user names", hint="give user names")
        repo.share(image_id, users)
        return f"shared with {', '.join(users)}"

    def unshare(repo: Store, image_id: str, form: dict[str, str]) -> str:
        user = form.get("user", "")
        repo.unshare(image_id, [user])
        return f"no longer shared with {user}"

    def visibility(repo: Store, image_id: str, form: dict[str, str]) -> str:
        public = form.get("public") == "1"
        repo.modify(image_id, ImageChanges(public=public))
        return "now public" if public else "now private"

    def describe(repo: Store, image_id: str, form: dict[str, str]) -> str:
        image = repo.show(image_id)
        tags = form.get("tags", "").replace(",", " ").split()
        try:
            changes = ImageChanges(description=form.get("description", "").replace("\r\n", "\n"),
                                   add_tags=[t for t in tags if t not in image.tags],
                                   remove_tags=[t for t in image.tags if t not in tags])
        except ValidationError as e:
            raise InvalidInput(problem(e), hint="fix the field and send the form again") from None
        repo.modify(image_id, changes)
        return "description and tags saved"

    def remove(repo: Store, image_id: str, form: dict[str, str]) -> str:
        image = repo.show(image_id)
        if form.get("confirm") != image.name:
            raise InvalidInput(f"type the image's name ({image.name}) to remove it", hint="nothing was removed")
        repo.remove(image_id)
        return f"removed {image.name} ({image_id})"

    for path, change in (("share", share), ("unshare", unshare), ("visibility", visibility),
                         ("describe", describe), ("remove", remove)):
        image_form(path, change)

    # -- signing in and out -----------------------------------------------------------------------

    @pages.get("/signin", response_class=HTMLResponse)
    def signin_page(request: Request, s: Session | None = Depends(session)) -> HTMLResponse:
        return _render("signin.html.j2", request, s, done="You are signed out." if "out" in request.query_params
                       and s is None else "")

    @pages.post("/signin")
    async def signin(request: Request) -> Response:
        request.state.session = None
        form = await _form(request, None)  # no session yet: the origin check alone
        try:
            session_id, _ = await run_in_threadpool(sessions.open, form.get("token", "").strip() or None)
        except (Unauthorized, Forbidden) as e:
            return _render("signin.html.j2", request, None, status=e.http_status, error=e)
        await run_in_threadpool(sessions.close, request.cookies.get(COOKIE))
        out = _back("/")
        out.set_cookie(COOKIE, session_id, max_age=int(LIFETIME.total_seconds()), path="/", httponly=True,
                       samesite="strict", secure=request.url.scheme == "https")
        return out

    @pages.post("/signout")
    async def signout(request: Request, s: Session | None = Depends(session)) -> Response:
        await _form(request, s)
        await run_in_threadpool(sessions.close, request.cookies.get(COOKIE))
        out = _back("/signin?out=1")
        out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return out

    # -- me: quota and tokens ---------------------------------------------------------------------

    @pages.get("/me", response_class=HTMLResponse)
    def me(request: Request, s: Session | None = Depends(session)) -> HTMLResponse:
        user = store(signed_in(s)).whoami()
        tokens = store(s).list_tokens(user.name)
        return _render("me.html.j2", request, s, user=user, percent=_percent(user), tokens=tokens,
                       seen=_token_list_state(tokens))

    @pages.post("/me/tokens", response_class=HTMLResponse)
    async def new_token(request: Request, s: Session | None = Depends(session)) -> Response:
        s = signed_in(s)
        form = await _form(request, s)
        days = form.get("days", "").strip()
        if days and (not DIGITS.fullmatch(days) or not 1 <= int(days) <= 3660):
            raise InvalidInput(f"bad lifetime {days[:20]!r}", hint="give whole days from 1 to 3660, or none")
        # the form names the token list it was shown with: the same form sent again (a reload of the page
        # that showed the new token) finds the list changed, and two copies sent at once (a double click)
        # are taken once by the session: either way no second token
        before = await run_in_threadpool(store(s).list_tokens, s.user.name)
        seen = form.get("seen", "")
        if seen != _token_list_state(before) or \
                not await run_in_threadpool(sessions.take_form, request.cookies.get(COOKIE), "token:" + seen):
            await run_in_threadpool(sessions.flash, request.cookies.get(COOKIE), STALE_TOKEN_FORM)
            return _back("/me")
        made = await run_in_threadpool(store(s).create_token, s.user.name, form.get("name", "")[:64],
                                       int(days) * 86400 if days else None)
        user = await run_in_threadpool(store(s).whoami)
        tokens = await run_in_threadpool(store(s).list_tokens, s.user.name)
        # shown this once, in this answer only: never in a URL, a redirect or the database
        return _render("me.html.j2", request, s, user=user, percent=_percent(user), tokens=tokens, new_token=made,
                       seen=_token_list_state(tokens))

    @pages.post("/me/tokens/{token_id}/revoke")
    async def revoke_token(token_id: str, request: Request, s: Session | None = Depends(session)) -> Response:
        s = signed_in(s)
        await _form(request, s)
        await run_in_threadpool(store(s).revoke_token, s.user.name, token_id)
        await run_in_threadpool(sessions.flash, request.cookies.get(COOKIE), f"revoked token {token_id}")
        return _back("/me")

    # -- admin ------------------------------------------------------------------------------------

    @pages.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, s: Session | None = Depends(session)) -> HTMLResponse:
        repo = store(admin_session(s))
        problem = health_problem(db)
        return _render("admin.html.j2", request, s, users=repo.list_users(), storage=repo.storage(),
                       database=f"{db.name}: {problem or 'reads and writes'}")

    @pages.post("/admin/users/{name}")
    async def admin_user(name: str, request: Request, s: Session | None = Depends(session)) -> Response:
        s = admin_session(s)
        form = await _form(request, s)
        repo = store(s)
        user = next((u for u in await run_in_threadpool(repo.list_users) if u.name == name), None)
        if user is None:
            raise NotFound(f"no user {name[:40]!r}", hint="pick the user from the admin page")
        quota = form.get("quota", "").strip()[:32]
        if quota:  # blank: unchanged
            quota_bytes = None if quota == "none" else parse_size(quota, "quota")
            if quota_bytes != user.quota_bytes:
                await run_in_threadpool(repo.set_quota, name, quota_bytes)
        if form.get("role") in (Role.ADMIN, Role.USER) and form["role"] != user.role:
            await run_in_threadpool(repo.set_role, name, Role(form["role"]))
        if form.get("status") in (UserStatus.ACTIVE, UserStatus.SUSPENDED) and form["status"] != user.status:
            await run_in_threadpool(repo.suspend, name, form["status"] == UserStatus.SUSPENDED)
        await run_in_threadpool(sessions.flash, request.cookies.get(COOKIE), f"saved {name}")
        return _back("/admin")

    @pages.post("/admin/gc")
    async def admin_gc(request: Request, s: Session | None = Depends(session)) -> Response:
        s = admin_session(s)
        await _form(request, s)
        report = await run_in_threadpool(store(s).gc)
        await run_in_threadpool(sessions.flash, request.cookies.get(COOKIE),
                                f"garbage collection freed {human(report.bytes_freed)}")
        return _back("/admin")

    return pages


def _token_list_state(tokens: list[TokenInfo]) -> str:
    """The token list a page showed, in a few characters: what the token form sends back."""
    return hashlib.sha256(",".join(sorted(t.id for t in tokens)).encode()).hexdigest()[:16]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _percent(user: User) -> int:
    if not user.quota_bytes:
        return 0
    return min(100, round(100 * user.used_bytes / user.quota_bytes))
