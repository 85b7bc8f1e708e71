"""Signed-in browsers: server-side sessions and the checks every state-changing form passes.

The cookie holds a random session id, never the repository token: the token is checked at sign-in
(by the same check the API makes, accounts.user_for_token) and dropped. The database keeps only the
id's sha256, as it keeps tokens, so a read of the database gives no live session. A session lives as
long as the token it was opened with, and at most LIFETIME: revoking the token, or its expiry, ends
it too. Signing out deletes the record: the old cookie then opens nothing. Each session has a CSRF
token that every form posts back; a POST must also come from this origin (Origin and Sec-Fetch-Site,
when the browser sends them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo.database import Database
from starlette.requests import Request

from rain.errors import Forbidden, NotFound
from rain.repository.accounts import Accounts, now
from rain.repository.models import User
from rain.repository.tokens import hash_token

COOKIE = "rain_session"
LIFETIME = timedelta(hours=8)
"""A session ends this long after sign-in, whatever the browser does with the cookie."""


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    flash: str = ""
    """What the last form did, said once on the next page (kept here, never in a URL anyone could forge)."""


class Sessions:
    def __init__(self, db: Database) -> None:
        self.coll = db["web_sessions"]
        self.tokens = db["tokens"]
        self.accounts = Accounts(db)
        self.coll.create_index("expires", expireAfterSeconds=0)  # MongoDB drops what ended; reads check too

    def open(self, token: str | None) -> tuple[str, User]:
        """A new session for the user of `token` (refused as the API refuses it): the id for the cookie."""
        user = self.accounts.user_for_token(token)
        assert token is not None  # user_for_token refused none
        if user.status != "active":
            raise Forbidden(f"user {user.name} is suspended", hint="ask an administrator to reinstate you")
        token_key = hash_token(token)
        held = self.tokens.find_one({"_id": token_key}, {"expires": 1}) or {}
        session_id = secrets.token_urlsafe(32)
        moment = now()
        ends = min(e for e in (moment + LIFETIME, held.get("expires")) if e is not None)
        self.coll.insert_one({"_id": _key(session_id), "user": user.name, "token": token_key,
                              "csrf": secrets.token_urlsafe(32), "created": moment, "expires": ends})
        return session_id, user

    def find(self, session_id: str | None) -> Session | None:
        """The session the cookie names, if it is live and its user may still act (not removed or suspended)."""
        if not session_id or len(session_id) > 128:
            return None
        doc: dict[str, Any] | None = self.coll.find_one({"_id": _key(session_id)})
        if doc is None or doc["expires"].replace(tzinfo=now().tzinfo) <= now():
            return None
        if self.tokens.find_one({"_id": doc.get("token")}, {"_id": 1}) is None:  # revoked since
            self.coll.delete_one({"_id": doc["_id"]})
            return None
        try:
            user = self.accounts.get(doc["user"])
        except NotFound:  # removed since: the session is over (a database failure is the service's 503)
            self.coll.delete_one({"_id": doc["_id"]})
            return None
        if user.status != "active":
            return None
        if doc.get("flash"):
            self.coll.update_one({"_id": doc["_id"]}, {"$unset": {"flash": ""}})
        return Session(user, doc["csrf"], doc.get("flash", ""))

    def take_form(self, session_id: str | None, form: str) -> bool:
        """Whether this is the first time the session sends `form` (a form's one-time value): atomic, so
        of two copies sent at once (a double click) exactly one is taken."""
        if not session_id:
            return False
        done = self.coll.update_one({"_id": _key(session_id)}, {"$addToSet": {"forms": form[:64]}})
        return done.modified_count == 1

    def flash(self, session_id: str | None, text: str) -> None:
        if session_id:
            self.coll.update_one({"_id": _key(session_id)}, {"$set": {"flash": text[:300]}})

    def close(self, session_id: str | None) -> None:
        if session_id:
            self.coll.delete_one({"_id": _key(session_id)})


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from a page of this site. Browsers send Origin with every
    POST and Sec-Fetch-Site with every request; a request with neither is not from a browser page."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None and site is not None  # a browser that hides Origin still says same-origin
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def check_form(request: Request, session: Session | None, form: dict[str, str]) -> None:
    """Refuse a form from another origin, or without this session's CSRF token (403, nothing changed)."""
    if not same_origin(request):
        raise Forbidden("this form came from another site", hint="use the form on this site's own page")
    if session is not None and not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
        raise Forbidden("this form has no valid CSRF token", hint="reload the page and send the form again")
