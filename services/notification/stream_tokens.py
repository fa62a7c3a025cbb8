"""Short-lived signed query tokens for the SSE stream: a browser's EventSource cannot send headers.

A coordinator's page exchanges its bearer token for one of these (``POST /alerts/stream-token``); it names
the MDT and expires in minutes, so one leaked from a URL log is worth little.

The signing keys live in a key file readable by the service alone (mode 0600), never in the service's
database: whoever reads the key can mint tokens. The file holds one key per line, the current one first;
rotating writes a new first line and keeps the old key on the second, so tokens signed before a rotation
verify until they expire. Every replica reads the same file (a mounted Secret in Kubernetes), and a
changed file is picked up without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from shared.store import Collection, DuplicateKey

log = logging.getLogger(__name__)
SHARED_KEY = "stream-token-secret"
# A token claiming a longer life than this is refused whatever its signature (settings cap issuing lower).
MAX_LIFETIME_SECONDS = 900


class BadStreamToken(Exception):
    """Missing, forged or expired."""


@dataclass(frozen=True)
class StreamGrant:
    mdt: str
    subject: str
    org: str
    role: str
    expires: int


def _write_keys(path: Path, keys: list[str], *, create: bool = False) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    # Created 0600 from the first byte (no window at the umask's mode), then swapped in whole.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"{k}\n" for k in keys))
    if create:
        try:
            os.link(temporary, path)  # fails if another replica on the same volume made it first
        finally:
            temporary.unlink()
    else:
        os.replace(temporary, path)


def rotate(path: Path) -> None:
    """A new current key; the current one becomes the previous (older keys are dropped)."""
    current = [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    _write_keys(path, [secrets.token_hex(32), *current[:1]])


class StreamTokens:
    def __init__(self, key_file: Path, *, shared: Collection | None = None) -> None:
        self._path = key_file
        self._shared = shared
        self._keys: list[bytes] = []
        self._seen: tuple[int, int] | None = None

    async def start(self) -> None:
        if self._shared is not None:
            await self._start_shared(self._shared)
            return
        if not self._path.exists():
            try:
                _write_keys(self._path, [secrets.token_hex(32)], create=True)
            except FileExistsError:
                pass  # another replica made it first: use theirs
        mode = stat.S_IMODE(self._path.stat().st_mode)
        if mode & 0o077:
            try:
                self._path.chmod(0o600)
            except OSError:  # a mounted Kubernetes Secret is read-only (0440, for the pod's group alone)
                log.info("notification.stream_key_mode mode=%o", mode, extra={"code": "NOT040"})
        self._load()

    async def _start_shared(self, shared: Collection) -> None:
        """Replicas on a shared store with no key file configured keep the one key in that store, as
        before, so that every replica still accepts every other's tokens (a key file is better: set one)."""
        log.warning("notification.stream_key_in_store", extra={"code": "NOT041"})
        try:
            await shared.insert({"_id": SHARED_KEY, "value": secrets.token_hex(32)})
        except DuplicateKey:
            pass  # another replica made it first: use theirs
        row = await shared.get(SHARED_KEY)
        assert row is not None
        self._keys, self._seen = [bytes.fromhex(row["value"])], None

    def _load(self) -> None:
        if self._shared is not None:
            return
        info = self._path.stat()
        if self._seen == (info.st_mtime_ns, info.st_size):
            return
        keys = [bytes.fromhex(line.strip()) for line in self._path.read_text().splitlines() if line.strip()]
        if not keys:
            raise ValueError("the stream-token key file holds no key")
        self._keys, self._seen = keys, (info.st_mtime_ns, info.st_size)

    def issue(self, *, mdt: str, subject: str, org: str, role: str, ttl: int) -> tuple[str, int]:
        self._load()
        issued = int(time.time())
        expires = issued + min(ttl, MAX_LIFETIME_SECONDS)
        body = (
            base64.urlsafe_b64encode(
                json.dumps(
                    {"mdt": mdt, "sub": subject, "org": org, "role": role, "iat": issued, "exp": expires},
                    separators=(",", ":"),
                ).encode()
            )
            .rstrip(b"=")
            .decode()
        )
        return f"{body}.{_sign(self._keys[0], body)}", expires

    def verify(self, token: str | None) -> StreamGrant:
        self._load()
        body, _, signature = (token or "").partition(".")
        if not body or not any(hmac.compare_digest(signature, _sign(key, body)) for key in self._keys):
            raise BadStreamToken("the stream token is not valid")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        now = time.time()
        if claims["exp"] < now:
            raise BadStreamToken("the stream token has expired")
        if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS or claims["iat"] > now + 60:
            raise BadStreamToken("the stream token claims a lifetime beyond the limit")
        return StreamGrant(claims["mdt"], claims["sub"], claims["org"], claims["role"], claims["exp"])


def _sign(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
