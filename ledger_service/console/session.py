"""The console's session: a sealed cookie, CSRF tokens and the checks every POST passes.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256 with a timestamp, from `cryptography`):
signed, so it cannot be forged; encrypted, because it carries the API key the operator signed in
with (the console calls the other services' APIs with it, and the key must never be readable from
the cookie jar or a log); and timed, so an old cookie is refused by the server whatever the
browser does with its expiry. Nothing is kept server-side, so any ledger process (or worker) serves
any session; signing out drops the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request

SESSION_COOKIE = "jifen_console"
LOGIN_COOKIE = "jifen_console_login"  # holds the CSRF token of the sign-in form, before any session
LOGIN_TTL_S = 3600
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class Session:
    api_key: str
    csrf: str
    issued_at: int


class SessionCodec:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        # Two keys from one secret, so a sign-in form's token can never pass for a session.
        self._session = Fernet(_derive(secret, b"session"))
        self._login = Fernet(_derive(secret, b"login"))
        self.ttl_s = ttl_s

    def seal(self, api_key: str, *, now: int | None = None) -> tuple[str, Session]:
        session = Session(api_key=api_key, csrf=secrets.token_urlsafe(32), issued_at=now or int(time.time()))
        payload = orjson.dumps({"k": session.api_key, "c": session.csrf})
        return self._session.encrypt_at_time(payload, session.issued_at).decode(), session

    def open(self, token: str | None) -> Session | None:
        data = _open(self._session, token, self.ttl_s)
        if data is None or not isinstance(data.get("k"), str) or not isinstance(data.get("c"), str):
            return None
        assert token is not None
        return Session(
            api_key=data["k"], csrf=data["c"], issued_at=self._session.extract_timestamp(token.encode())
        )

    def login_token(self) -> tuple[str, str]:
        """(cookie value, CSRF token) for the sign-in form."""
        csrf = secrets.token_urlsafe(32)
        return self._login.encrypt(orjson.dumps({"c": csrf})).decode(), csrf

    def login_csrf(self, token: str | None) -> str | None:
        data = _open(self._login, token, LOGIN_TTL_S)
        value = None if data is None else data.get("c")
        return value if isinstance(value, str) else None


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return base64.urlsafe_b64encode(hmac.new(secret, b"jifen-console:" + purpose, hashlib.sha256).digest())


def _open(fernet: Fernet, token: str | None, ttl_s: int) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        data = orjson.loads(fernet.decrypt(token.encode(), ttl=ttl_s))
    except (InvalidToken, orjson.JSONDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def cross_site(request: Request) -> bool:
    """A POST from another site: refused before anything else, whatever its cookies (SameSite=Strict
    already keeps them off such a request in a current browser; this does not rely on it)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc != host
