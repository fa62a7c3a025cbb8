"""Short-lived signed query tokens for the SSE stream: a browser's EventSource cannot send headers.

A coordinator's page exchanges its bearer token for one of these (``POST /alerts/stream-token``); it names
the MDT and expires in minutes, so one leaked from a URL log is worth little. The signing secret lives in
the notification store, so every replica accepts every other replica's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from shared.store import DocumentStore, DuplicateKey

SECRET_KEY = "stream-token-secret"


class BadStreamToken(Exception):
    """Missing, forged or expired."""


@dataclass(frozen=True)
class StreamGrant:
    mdt: str
    subject: str
    org: str
    role: str
    expires: int


class StreamTokens:
    def __init__(self, store: DocumentStore) -> None:
        self._secrets = store.collection("secrets")
        self._key: bytes | None = None

    async def start(self) -> None:
        try:
            await self._secrets.insert({"_id": SECRET_KEY, "value": secrets.token_hex(32)})
        except DuplicateKey:
            pass  # another replica made it first: use theirs
        row = await self._secrets.get(SECRET_KEY)
        assert row is not None
        self._key = bytes.fromhex(row["value"])

    def issue(self, *, mdt: str, subject: str, org: str, role: str, ttl: int) -> tuple[str, int]:
        expires = int(time.time()) + ttl
        body = base64.urlsafe_b64encode(json.dumps(
            {"mdt": mdt, "sub": subject, "org": org, "role": role, "exp": expires}, separators=(",", ":")
        ).encode()).rstrip(b"=").decode()
        return f"{body}.{self._sign(body)}", expires

    def verify(self, token: str | None) -> StreamGrant:
        body, _, signature = (token or "").partition(".")
        if not body or not hmac.compare_digest(signature, self._sign(body)):
            raise BadStreamToken("the stream token is not valid")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["exp"] < time.time():
            raise BadStreamToken("the stream token has expired")
        return StreamGrant(claims["mdt"], claims["sub"], claims["org"], claims["role"], claims["exp"])

    def _sign(self, body: str) -> str:
        assert self._key is not None, "start() first"
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
