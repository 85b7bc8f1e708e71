"""HTTP client for `fg-image serve`, with the same interface as store.Store.

Errors the service sends back become the same RainError kinds the store
raises, so callers (the CLI, the contract tests) cannot tell the two apart.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
import urllib3

from rain.errors import IntegrityError, RainError, Unreachable, from_kind
from rain.repository.base import Progress
from rain.repository.fields import checked
from rain.repository.models import (
    Event,
    GcReport,
    Image,
    ImageChanges,
    ImageId,
    ImageMeta,
    ImageQuery,
    ImageSummary,
    Launch,
    LaunchId,
    LaunchIn,
    NewToken,
    Role,
    StorageReport,
    TokenInfo,
    User,
    valid_launch,
)

API = "/api/v1"
CHUNK = 1 << 20



def _image(image_id: str) -> str:
    """An image id for a URL path, checked here as the service checks it (so `../users` never leaves)."""
    return _seg(checked(ImageId, image_id, "image id"))


def _launch(launch_id: str) -> str:
    """A launch id for a URL path, checked here as the Store checks it."""
    return _seg(checked(LaunchId, launch_id, "launch id"))


def _seg(value: str) -> str:
    """One URL path segment: an id or name typed by the user (or answered by the service) cannot climb to
    another endpoint (`../users`) or add a query; the service then refuses it as the bad value it is."""
    return quote(str(value), safe="")

class _Body:
    """A file-like upload body of known length that reports progress and checks the declared size.

    `__len__` gives requests the Content-Length; `__iter__` makes requests stream it rather than
    read it whole."""

    def __init__(self, src: BinaryIO, size: int, progress: Progress | None) -> None:
        self.src, self.size, self.remaining, self.progress = src, size, size, progress

    def __len__(self) -> int:
        return self.remaining

    def read(self, n: int = -1) -> bytes:
        """Raises IntegrityError, as Store.put does, if src holds fewer or more bytes than declared
        (sending less than Content-Length would leave the service waiting for the rest)."""
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        chunk = self.src.read(max(n, 0)) if n else b""
        if n and not chunk:
            raise IntegrityError(f"the upload ended after {self.size - self.remaining} of {self.size} bytes",
                                 hint="the source was truncated; upload again")
        self.remaining -= len(chunk)
        if chunk and not self.remaining and self.src.read(1):
            raise IntegrityError(f"the source holds more than the declared {self.size} bytes",
                                 hint="declare the real size")
        if chunk and self.progress:
            self.progress(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                return
            yield chunk


def bounded_body(response: requests.Response, most: int, what: str, where: str) -> bytes:
    """A streamed answer's body, refused as soon as it passes `most` bytes (a service that sends
    without end must not fill this machine's memory)."""
    body = bytearray()
    try:
        for piece in response.iter_content(1 << 20):
            body += piece
            if len(body) > most:
                raise IntegrityError(f"{what} from {where} is over {most} bytes",
                                     hint="the service sent more than it should; tell its operator")
    except requests.exceptions.RequestException as e:
        raise Unreachable(f"{what} from {where} broke off", hint="run the command again") from e
    return bytes(body)


def exact_body(response: requests.Response, size: int, what: str, where: str) -> tuple[memoryview, int]:
    """A streamed answer's body read into one buffer of the `size` it should be: (the buffer, how many
    bytes came, up to size + 1: more than `size` is never read, and is an error for the caller)."""
    body = bytearray(size + 1)
    view, at = memoryview(body), 0
    try:
        while at <= size:
            n = response.raw.readinto(view[at:at + (4 << 20)])
            if not n:
                break
            at += n
    except (urllib3.exceptions.HTTPError, OSError) as e:  # what urllib3's readinto raises
        raise Unreachable(f"{what} from {where} broke off", hint="run the command again") from e
    return view[:min(at, size)], at


class Client:
    """The Repository over HTTP, authenticated by a bearer token."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise from_kind("config", f"bad repository URL {base_url!r}",
                            hint="use http://host:port or https://host:port")
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "rain-fg-image"

    def clone(self) -> Client:
        """The same client on its own HTTP session (a requests.Session is not for several threads)."""
        return type(self)(self.base, self.token, self.timeout)

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.base + (path if path.startswith("/healthz") else API + path)
        kwargs.setdefault("timeout", (min(self.timeout, 10), self.timeout))
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as e:
            raise Unreachable(f"TLS to the repository at {self.base} failed: {e.__class__.__name__}",
                              hint="check the certificate (REQUESTS_CA_BUNDLE) or the URL scheme") from e
        except requests.exceptions.RequestException as e:
            raise Unreachable(f"cannot reach the repository service at {self.base}",
                              hint="check --repo / RAIN_REPO_URL and that `fg-image serve` runs there") from e
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: requests.Response) -> RainError:
        try:
            body = response.json()
            return from_kind(body["error"], body["message"], body.get("hint"))
        except (ValueError, KeyError, TypeError):
            return RainError(f"the repository service answered HTTP {response.status_code} "
                             f"{response.reason}", hint="check the URL; tell the operator if it persists")

    max_json: int | None = None
    """The most bytes a JSON answer may have (None: any); for a service this site does not run."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.max_json is None:
            return self._call(method, path, **kwargs).json()
        with self._call(method, path, stream=True, **kwargs) as response:
            body = bounded_body(response, self.max_json, f"the answer to {method} {path}", self.base)
        try:
            return json.loads(body)
        except ValueError:
            raise RainError(f"the service at {self.base} answered {method} {path} with no valid JSON",
                            hint="check the URL; tell its operator") from None

    def healthz(self) -> dict[str, Any]:
        return dict(self._call("GET", "/healthz").json())

    # -- images ----------------------------------------------------------------------------

    def whoami(self) -> User:
        return User(**self._json("GET", "/whoami"))

    def put(self, src: BinaryIO, meta: ImageMeta, size: int, sha256: str | None = None,
            progress: Progress | None = None, bases: Sequence[str] = ()) -> Image:
        """A file that can seek goes as a delta (client_delta.py): only the chunks the repository lacks
        from its parent, `bases` and the same-named images of yours; a pipe is streamed whole."""
        from rain.repository import client_delta

        if client_delta.seekable(src):
            return client_delta.put(self, src, meta, size, sha256, progress, bases)
        ticket = self._json("POST", "/images", json={"meta": meta.model_dump(mode="json"), "size": size,
                                                     "sha256": sha256})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if sha256:
            headers["X-Rain-Sha256"] = sha256
        body = _Body(src, size, progress)
        response = self._call("PUT", f"/uploads/{_seg(ticket['upload_id'])}", data=body, headers=headers,
                              timeout=(10, max(self.timeout, 600)))
        return Image(**response.json())

    def get(self, image_id: str, dest: BinaryIO, offset: int = 0, progress: Progress | None = None) -> Image:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        image = self.show(image_id)
        if offset and offset >= image.size:
            return image
        with self._call("GET", f"/images/{_image(image_id)}/data", headers=headers, stream=True,
                        timeout=(10, max(self.timeout, 600))) as response:
            digest = hashlib.sha256() if not offset else None
            received = 0
            try:
                for chunk in response.iter_content(CHUNK):
                    dest.write(chunk)
                    received += len(chunk)
                    if digest:
                        digest.update(chunk)
                    if progress:
                        progress(len(chunk))
            except requests.exceptions.RequestException as e:
                raise Unreachable(f"the download of {image_id} broke off after {offset + received} bytes",
                                  hint="run the download again; it resumes where it stopped") from e
            etag = response.headers.get("ETag", "").strip('"')
        if offset + received != image.size:
            raise IntegrityError(f"the download of {image_id} ended after {offset + received} of "
                                 f"{image.size} bytes", hint="run the download again; it resumes")
        if digest and digest.hexdigest() != (etag or image.sha256):
            raise IntegrityError(f"image {image_id} failed its checksum on download",
                                 hint="download again; if it persists the stored bytes are damaged")
        return image

    def list(self, query: ImageQuery | None = None) -> builtins.list[ImageSummary]:
        params = (query or ImageQuery()).model_dump(mode="json", exclude_none=True)
        return [ImageSummary(**d) for d in self._json("GET", "/images", params=params)]

    def show(self, image_id: str) -> Image:
        return Image(**self._json("GET", f"/images/{_image(image_id)}"))

    def modify(self, image_id: str, changes: ImageChanges) -> Image:
        return Image(**self._json("PATCH", f"/images/{_image(image_id)}",
                                  json=changes.model_dump(mode="json", exclude_defaults=True)))

    def remove(self, image_id: str, force: bool = False) -> Image:
        return Image(**self._json("DELETE", f"/images/{_image(image_id)}", params={"force": str(force).lower()}))

    def share(self, image_id: str, users: builtins.list[str]) -> Image:
        return Image(**self._json("POST", f"/images/{_image(image_id)}/share", json={"users": users}))

    def unshare(self, image_id: str, users: builtins.list[str]) -> Image:
        return Image(**self._json("POST", f"/images/{_image(image_id)}/unshare", json={"users": users}))

    def history(self, image_id: str | None = None, user: str | None = None, limit: int = 100) -> builtins.list[Event]:
        params = {k: v for k, v in {"image_id": image_id, "user": user, "limit": limit}.items() if v is not None}
        return [Event(**d) for d in self._json("GET", "/history", params=params)]

    # -- registration records ----------------------------------------------------------------

    def set_vetting(self, image_id: str, target: str, report: dict[str, Any]) -> Image:
        return Image(**self._json("PUT", f"/images/{_image(image_id)}/vetting/{_seg(target)}", json=report))

    def accept_rule(self, image_id: str, target: str, rule_id: str) -> Image:
        return Image(**self._json("POST", f"/images/{_image(image_id)}/accepted-rules",
                                  json={"target": target, "rule": rule_id}))

    def add_registration(self, image_id: str, target: str, site: str, remote_id: str,
                         detail: dict[str, Any] | None = None) -> Image:
        body = {"target": target, "site": site, "remote_id": remote_id, "detail": detail or {}}
        return Image(**self._json("POST", f"/images/{_image(image_id)}/registrations", json=body))

    def record_export(self, image_id: str, target: str, detail: dict[str, Any] | None = None) -> Image:
        body = {"target": target, "detail": detail or {}}
        return Image(**self._json("POST", f"/images/{_image(image_id)}/exports", json=body))

    def add_reproduction(self, image_id: str, found: dict[str, Any]) -> Image:
        return Image(**self._json("POST", f"/images/{_image(image_id)}/reproductions", json=found))

    def remove_registration(self, image_id: str, target: str, site: str = "") -> Image:
        return Image(**self._json("DELETE", f"/images/{_image(image_id)}/registrations/{_seg(target)}",
                                  params={"site": site} if site else None))

    # -- launch records ----------------------------------------------------------------------

    def add_launch(self, launch: LaunchIn) -> Launch:
        """Checked here as the Store checks it (the service checks it again)."""
        body = valid_launch(launch).model_dump(mode="json")
        return Launch(**self._json("POST", "/launches", json=body))

    def launches(self, everyone: bool = False) -> builtins.list[Launch]:
        return [Launch(**d) for d in self._json("GET", "/launches", params={"everyone": str(everyone).lower()})]

    def remove_launch(self, launch_id: str) -> Launch:
        return Launch(**self._json("DELETE", f"/launches/{_launch(launch_id)}"))

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, role: Role = Role.USER, quota: int | None = None) -> User:
        return User(**self._json("POST", "/users", json={"name": name, "role": str(role), "quota_bytes": quota}))

    def remove_user(self, name: str) -> None:
        self._call("DELETE", f"/users/{_seg(name)}")

    def list_users(self) -> builtins.list[User]:
        return [User(**d) for d in self._json("GET", "/users")]

    def set_quota(self, name: str, quota: int | None) -> User:
        return User(**self._json("PUT", f"/users/{_seg(name)}/quota", json={"quota_bytes": quota}))

    def set_role(self, name: str, role: Role) -> User:
        return User(**self._json("PUT", f"/users/{_seg(name)}/role", json={"role": str(role)}))

    def suspend(self, name: str, suspended: bool = True) -> User:
        return User(**self._json("PUT", f"/users/{_seg(name)}/suspended", json={"suspended": suspended}))

    def issue_token(self, name: str) -> str:
        return str(self._json("POST", f"/users/{_seg(name)}/tokens")["token"])

    def create_token(self, name: str, label: str = "", expires_in: int | None = None) -> NewToken:
        body = {"name": label, "expires_in": expires_in}
        return NewToken(**self._json("POST", f"/users/{_seg(name)}/tokens", json=body))

    def list_tokens(self, name: str | None = None) -> builtins.list[TokenInfo]:
        name = name or self.whoami().name
        return [TokenInfo(**d) for d in self._json("GET", f"/users/{_seg(name)}/tokens")]

    def revoke_token(self, name: str, token_id: str) -> TokenInfo:
        return TokenInfo(**self._json("DELETE", f"/users/{_seg(name)}/tokens/{_seg(token_id)}"))

    def revoke_tokens(self, name: str) -> int:
        return int(self._json("DELETE", f"/users/{_seg(name)}/tokens")["revoked"])

    def gc(self) -> GcReport:
        return GcReport(**self._json("POST", "/gc"))

    def storage(self) -> StorageReport:
        return StorageReport(**self._json("GET", "/storage"))
