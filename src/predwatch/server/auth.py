"""Who is calling: run write tokens, read API keys, and what each may see.

Two kinds of secret, told apart by their prefix:

- a **run write token** (``pwr_...``) belongs to one run. It is sent as
  ``Authorization: Bearer`` by training jobs; the ingest API takes the run (and so the owner) of
  the rows from it, never from the body. It can also read and finish its own run.
- a **read API key** (``pwk_...``) belongs to a user; sent as ``X-API-Key`` (or
  ``X-Workspace-API-Key``, as the original system's SDKs may) or as ``Authorization: Bearer``. A
  key sees only its user's runs; every other run answers 404, exactly like a run that does not
  exist. On an open server (no keys), credentials that are not predwatch's are ignored.

Browsers sign in with a key (``POST /login``) and get a **session**: a random id in the cookie
``predwatch_session_<port>`` (``HttpOnly; SameSite=Strict``; named after the port the browser
sees, since cookies are not separated by port), stored server-side as a digest, ending on
sign-out, after ``SESSION_SECONDS`` or when its key is revoked. The key itself never goes into a
cookie. A state-changing request that carries the cookie must come from this server's own pages:
``predwatch.server.guards`` refuses it unless ``Sec-Fetch-Site``/``Origin`` say same-origin or it
carries the session's CSRF token (``csrf_token`` form field or ``X-CSRF-Token`` header).

Secrets are 256-bit random strings shown once and stored as SHA-256 digests. Looking a digest up
in an index is the comparison: its timing can reveal at most a prefix of a digest, which does not
help forge a secret (its preimage is 256 random bits), so no secret is ever compared byte by byte.

Without auth (``Settings.auth_required`` false: a loopback bind or ``auth=off``) anonymous
callers see every run; a presented key still authenticates and scopes to its user, and a
secret that is not predwatch's is ignored (the original SDKs always send one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from predwatch.config import Settings
from predwatch.errors import AuthError, NotFound
from predwatch.records import Run, utcnow
from predwatch.storage.base import Store

RUN_TOKEN_PREFIX = "pwr_"
API_KEY_PREFIX = "pwk_"
SESSION_PREFIX = "pws_"
SESSION_COOKIE_PREFIX = "predwatch_session_"
LEGACY_KEY_COOKIE = "predwatch_key"  # held the raw key before sessions; never read, cleared
SESSION_SECONDS = 12 * 3600  # a working day: a copied cookie is worth little for long
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_CREATE_KEY_HINT = "create one with: predwatch keys create --user NAME --db DATABASE_URL"


def hash_secret(secret: str) -> str:
    """The stored form of a token or key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_run_token() -> str:
    return RUN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def issue_run_token(store: Store, run_id: str) -> str:
    """Create a write token for ``run_id``; returns the token (shown once, stored hashed)."""
    token = new_run_token()
    store.add_run_token(run_id, hash_secret(token))
    return token


def create_api_key(store: Store, user: str, *, label: str | None = None) -> tuple[str, str]:
    """Create a read API key for ``user`` (created when absent); returns ``(key_id, key)``."""
    key = new_api_key()
    key_id = store.add_api_key(user, hash_secret(key), label=label)
    return key_id, key


def has_api_keys(store: Store) -> bool:
    """Whether any non-revoked API key exists (``serve`` refuses auth without one)."""
    return store.has_api_keys()


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    ``user``: the API key's user (None: anonymous on an open server, or a run token).
    ``run_id``: set when the caller authenticated with a run write token; it sees only that run.
    """

    user: str | None = None
    run_id: str | None = None

    @property
    def owner(self) -> str | None:
        """The ``owner`` filter for store and analysis calls."""
        return self.user

    def run(self, store: Store, run_id: str) -> Run:
        """The run if this caller may see it, else ``NotFound`` (never a hint that it exists)."""
        if self.run_id is not None and run_id != self.run_id:
            raise NotFound(f"run {run_id!r} not found")
        return store.get_run(run_id, owner=self.owner)

    def manageable_run(self, store: Store, run_id: str) -> Run:
        """A run this caller may delete or issue tokens for: a key's own run, or any run on an
        open server. A run token cannot (it is a write credential for rows only)."""
        if self.run_id is not None:
            raise NotFound(f"run {run_id!r} not found")
        return store.get_run(run_id, owner=self.owner)


KEY_HEADERS = ("x-api-key", "x-workspace-api-key")
"""Headers that carry an API key (the second is what the original system's SDKs may send)."""


def presented_secret(request: Request, *, open_server: bool = False) -> str | None:
    """The token or key of a request: ``X-API-Key`` or ``X-Workspace-API-Key``, else
    ``Authorization: Bearer`` (a browser's session cookie is read by ``reader``).

    ``open_server`` (no authentication required): a secret that is not predwatch's (no
    ``pwr_``/``pwk_`` prefix, e.g. the key an original SDK insists on sending, or a browser
    session token), and an ``Authorization`` header of another scheme, are ignored: the caller
    is anonymous, as if it had sent nothing.
    """
    for name in KEY_HEADERS:
        key = (request.headers.get(name) or "").strip()
        if key and (not open_server or _is_ours(key)):
            return key
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            if not open_server or _is_ours(value):
                return value
        elif not open_server:
            raise AuthError("Authorization header must be 'Bearer <token>'",
                            detail={"field": "Authorization"})
    return None


def _is_ours(secret: str) -> bool:
    return secret.startswith((RUN_TOKEN_PREFIX, API_KEY_PREFIX))


def authenticate(store: Store, settings: Settings, secret: str | None) -> Principal:
    """The principal for a presented secret (``AuthError`` when it is unknown or revoked)."""
    if secret is None:
        if settings.auth_required:
            raise AuthError(
                "an API key is required (X-API-Key or Authorization: Bearer); " + _CREATE_KEY_HINT,
                detail={"field": "X-API-Key"},
            )
        return Principal()
    digest = hash_secret(secret)
    if secret.startswith(RUN_TOKEN_PREFIX):
        run = store.run_for_token(digest)
        if run is None:
            raise AuthError("unknown or revoked run token", detail={"field": "Authorization"})
        return Principal(run_id=run.id)
    user = store.user_for_key(digest)
    if user is None:
        raise AuthError("unknown or revoked API key", detail={"field": "X-API-Key"})
    return Principal(user=user)


def reader(request: Request) -> Principal:
    """FastAPI dependency: the caller of a read (or management) route: a header credential,
    else the browser's session, else anonymous (where the server allows it)."""
    state = request.app.state
    settings: Settings = state.settings
    secret = presented_secret(request, open_server=not settings.auth_required)
    session = request.cookies.get(session_cookie_name(request.headers.get("host"),
                                                      request.url.scheme))
    if secret is None and session:
        user = state.store.user_for_session(hash_secret(session))
        if user is None:
            raise AuthError("your session has ended (signed out, expired or its key revoked); "
                            "sign in again", detail={"field": "cookie"})
        return Principal(user=user)
    return authenticate(state.store, settings, secret)


# --- browser sessions ---------------------------------------------------------------------------
def session_cookie_name(host: str | None, scheme: str = "http") -> str:
    """``predwatch_session_<port>``: the port of the ``Host`` the browser used (its scheme's
    default when none). Browsers send a host's cookies to every port, so two servers on one
    machine must not share a name (one would sign the other out)."""
    host = (host or "").strip()
    port = ""
    if host.startswith("["):  # [::1]:8000
        port = host.partition("]")[2].lstrip(":")
    elif host.count(":") == 1:
        port = host.rpartition(":")[2]
    if not port.isdigit():
        port = "443" if scheme in ("https", "wss") else "80"
    return f"{SESSION_COOKIE_PREFIX}{int(port)}"


def start_session(store: Store, key: str) -> tuple[str, str]:
    """Sign a browser in with API key ``key``; returns ``(session id, user)``. The id goes into
    the cookie; the store keeps only its digest. ``AuthError`` when the key is not a valid API
    key (a run token cannot sign in: it is a training job's write credential)."""
    if key.startswith(RUN_TOKEN_PREFIX):
        raise AuthError("sign in with an API key (pwk_...), not a run write token; "
                        + _CREATE_KEY_HINT, detail={"field": "key"})
    session = SESSION_PREFIX + secrets.token_urlsafe(32)
    user = store.create_session(hash_secret(session), hash_secret(key),
                                expires_at=utcnow() + timedelta(seconds=SESSION_SECONDS))
    if user is None:
        raise AuthError("unknown or revoked API key", detail={"field": "key"})
    return session, user


def end_session(store: Store, session: str | None) -> None:
    """Sign out: the session is deleted server-side (its cookie is then worth nothing)."""
    if session:
        store.revoke_session(hash_secret(session))


def csrf_token(session: str) -> str:
    """The CSRF token of a session: derived from its id, which a page on another origin can
    neither read (``HttpOnly``) nor guess; the token does not reveal the id."""
    return hmac.new(session.encode("utf-8"), b"predwatch csrf", hashlib.sha256).hexdigest()


def csrf_token_of(request: Request) -> str:
    """The CSRF token for the forms of a page ('' when the browser has no session)."""
    session = request.cookies.get(session_cookie_name(request.headers.get("host"),
                                                      request.url.scheme))
    return csrf_token(session) if session else ""


def run_writer(request: Request) -> Run:
    """FastAPI dependency for ingest: the run of the request's write token (always required)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(
            "a run write token is required: Authorization: Bearer <token> "
            "(create a run and its token with: predwatch runs create)",
            detail={"field": "Authorization"},
        )
    store: Store = request.app.state.store
    run = store.run_for_token(hash_secret(token))
    if run is None:
        raise AuthError("unknown or revoked run token", detail={"field": "Authorization"})
    return run


Reader = Annotated[Principal, Depends(reader)]
"""A route parameter: the caller of a read or management route."""
Writer = Annotated[Run, Depends(run_writer)]
"""A route parameter: the run of the request's write token."""
