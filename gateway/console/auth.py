"""Console sessions: log in with an ``[admin] tokens`` token, act under its name and scope.

The token is typed once into the login form; the browser then holds only a random
session id in an HttpOnly, SameSite=Strict cookie. The session lives in Redis (so every
gateway process sharing it knows it, and logging out ends it everywhere) under a hash of
the id, with the token's name, a digest of its secret and a CSRF token. Each request
checks the session against the conf's tokens *now*: a token removed or changed in the
conf ends its sessions at once, and the scope is always the conf's.

Every POST carries the session's CSRF token in a form field (compared in constant
time); the login form, before any session exists, a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis

from ..adminapi import Token

#: Session cookie and the login form's CSRF cookie.
COOKIE = "tocsin_console"
LOGIN_COOKIE = "tocsin_console_login"
#: How long a session lasts from login (s): one working day.
SESSION_TTL = 8 * 3600


@dataclass(frozen=True)
class Session:
    name: str
    scope: str  # read | operate
    csrf: str
    sid: str

    @property
    def can_operate(self) -> bool:
        return self.scope == "operate"


class _Stored(msgspec.Struct):
    name: str
    secret: str
    csrf: str


_decoder = msgspec.json.Decoder(_Stored)


def match_token(given: str, tokens: tuple[Token, ...]) -> Token | None:
    """The conf's token equal to ``given``; every one is compared, in constant time, so
    the time taken says nothing of which (if any) matched."""
    raw = given.strip().encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(raw, token.secret):
            found = token
    return found if raw else None


def _digest(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def _key(prefix: str, sid: str) -> str:
    # Only a hash of the id is stored: reading Redis gives no usable cookie.
    return f"{prefix}:console:session:{hashlib.sha256(sid.encode()).hexdigest()}"


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def open_session(redis: Redis, prefix: str, token: Token) -> Session:
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    stored = _Stored(name=token.name, secret=_digest(token.secret), csrf=csrf)
    await redis.set(_key(prefix, sid), msgspec.json.encode(stored), ex=SESSION_TTL)
    return Session(token.name, token.scope, csrf, sid)


async def find_session(
    redis: Redis, prefix: str, sid: str | None, tokens: tuple[Token, ...]
) -> Session | None:
    """The session of a cookie, if it is still one of a token the conf has."""
    if not sid or len(sid) > 128:
        return None
    data: Any = await redis.get(_key(prefix, sid))
    if data is None:
        return None
    try:
        stored = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    for token in tokens:
        if token.name == stored.name and same(_digest(token.secret), stored.secret):
            return Session(token.name, token.scope, stored.csrf, sid)
    return None


async def close_session(redis: Redis, prefix: str, sid: str) -> None:
    await redis.delete(_key(prefix, sid))
