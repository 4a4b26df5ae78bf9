"""Standard Webhooks signatures (HMAC-SHA256, ``v1``), for both directions.

The intake verifies what providers and other Tocsins post; the json_hook channel
signs what it sends. One implementation keeps the two compatible, so one Tocsin
can feed another.  Spec: https://www.standardwebhooks.com/
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0


class SignatureError(ValueError):
    """The request is not authentic; the message says why (never which secret was tried)."""


def decode_secret(secret: str) -> bytes:
    """``whsec_<base64>`` (the spec's form) or a raw string used as-is."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    else:
        key = secret.encode()
    if not key:
        raise ValueError("a secret must not be empty: anyone could sign with an empty key")
    return key


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Signer:
    """Signs outgoing messages with one or more keys (several during a rotation)."""

    __slots__ = ("_keys",)

    def __init__(self, secrets_: Iterable[str]) -> None:
        self._keys = [decode_secret(s) for s in secrets_]
        if not self._keys:
            raise ValueError("at least one secret is needed to sign")

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()
            for key in self._keys
        )

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": self.signature(msg_id, ts, body),
        }


class Verifier:
    """Verifies incoming ``webhook-*`` headers against any of the configured secrets."""

    __slots__ = ("_keys", "tolerance")

    def __init__(self, secrets_: Iterable[str], tolerance: float = DEFAULT_TOLERANCE) -> None:
        self._keys = [decode_secret(s) for s in secrets_]
        self.tolerance = tolerance

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """Return the message id, or raise ``SignatureError``."""
        msg_id = headers.get("webhook-id")
        ts_text = headers.get("webhook-timestamp")
        sig_header = headers.get("webhook-signature")
        if not msg_id or not ts_text or not sig_header:
            missing = [
                name
                for name, value in (
                    ("webhook-id", msg_id),
                    ("webhook-timestamp", ts_text),
                    ("webhook-signature", sig_header),
                )
                if not value
            ]
            raise SignatureError(f"missing header(s): {', '.join(missing)}")
        try:
            timestamp = int(ts_text)
        except ValueError:
            raise SignatureError("webhook-timestamp is not an integer") from None
        current = time.time() if now is None else now
        if timestamp < current - self.tolerance:
            raise SignatureError("webhook-timestamp is too old")
        if timestamp > current + self.tolerance:
            raise SignatureError("webhook-timestamp is too far in the future")
        try:
            # aiohttp keeps header bytes that are not UTF-8 as surrogates: not a signature.
            signed = f"{msg_id}.{timestamp}.".encode() + body
            candidates = [c.encode() for c in sig_header.split(" ")]
        except UnicodeError:
            raise SignatureError("webhook-id or webhook-signature is not valid text") from None
        expected = [
            base64.b64encode(hmac.digest(key, signed, hashlib.sha256)) for key in self._keys
        ]
        for candidate in candidates:
            version, _, raw = candidate.partition(b",")
            if version != b"v1":
                continue
            # Compare against every key without short-circuiting on the first mismatch.
            if any(hmac.compare_digest(raw, good) for good in expected):
                return msg_id
        raise SignatureError("no valid v1 signature")
