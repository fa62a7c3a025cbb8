"""The key that signs the audit chain's checkpoints (Ed25519).

Hash links alone let someone with write access to the database rewrite the whole chain consistently; a
signature over the head hash, made with a key that database access does not give, is what catches that.
Every audit replica must sign with the same key: in a deployment it is a file mounted from a Secret
(``LHCIE_AUDIT_SIGNING_KEY_FILE``); the embedded run creates one under ``<data_dir>/audit/``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit.settings import AuditSettings
from shared.files import private_dir


class CheckpointSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public: Ed25519PublicKey = key.public_key()
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # The raw public key: all a process that only checks checkpoints needs (range workers of $verify).
        self.public_key = raw
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def generate(cls) -> CheckpointSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> CheckpointSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the audit signing key must be an Ed25519 private key (PEM, PKCS#8)")
        return cls(key)

    @classmethod
    def for_settings(cls, settings: AuditSettings, data_dir: Path) -> CheckpointSigner:
        """The configured key file, or the embedded key in ``data_dir`` (created on first use)."""
        if settings.signing_key_file is not None:
            return cls.from_pem(settings.signing_key_file.read_bytes())
        return cls.from_pem(_load_or_create(data_dir / "audit" / "checkpoint-key.pem"))

    def sign(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(self._key.sign(data)).decode()

    def verify(self, data: bytes, signature: str) -> bool:
        try:
            self._public.verify(base64.urlsafe_b64decode(signature.encode()), data)
            return True
        except (InvalidSignature, ValueError):
            return False


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        private_dir(path.parent)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(tmp, path)  # first writer wins when several replicas start at once
        except FileExistsError:
            pass
        tmp.unlink()
    return path.read_bytes()
