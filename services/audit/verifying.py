"""Checking the audit chain, apart from reading and writing it: what a record's hash is over, reading a
stored record's link and position from its bytes, checkpoint signatures, and the walk that checks records
in chain order and names the first that fails.

Kept free of the service's settings and store so that a range worker (``services.audit.range_worker``), a
fresh interpreter, starts in a fraction of a second: it imports this module, ``sqlite3`` and, for signed
chains, Ed25519 from ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Document = dict[str, Any]

GENESIS = "0" * 64
VERIFY_PAGE = 1000


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def orjson_canonical(value: Any) -> bytes:
    """``canonical`` as orjson writes it, a tenth of the time for an AuditEvent of 4 KB (8 against 90 µs
    here), with which the chain writes new records: byte for byte the same text but for some floats
    (``0.00001`` where the standard library writes ``1e-05``)."""
    import orjson  # here only for a record holding such a float: a range worker starts without it

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def record_hash(seq: int, prev_hash: str, resource: dict[str, Any], **fields: Any) -> str:
    """SHA-256 over the record's position, its link, its AuditEvent and its other stored fields."""
    return hashlib.sha256(canonical({**fields, "seq": seq, "prev_hash": prev_hash, "resource": resource})).hexdigest()


def _canonical_text(value: Any) -> str:
    return canonical(value).decode()


# A record stored by this version starts with its key and hash, then the exact canonical text that was
# hashed, so $verify can hash the stored bytes without parsing and re-serialising each record (the two
# were two thirds of its time). Anything else (older records, another store) is verified the slow way.
_STORED_PREFIX = b'{"_id":"'
_BODY_AT = 96
# The hashed text starts with the "{" that the stored key and hash displaced.
_OPEN = hashlib.sha256(b"{")


def _stored(key: str, hash_: str, body: str) -> str:
    """A record as stored: ``{"_id":…,"hash":…,`` then ``body``, the canonical text its hash is over."""
    return f'{{"_id":"{key}","hash":"{hash_}",{body[1:]}'


def _fast_read(raw: bytes) -> tuple[int, str, str] | None:
    """``(seq, prev_hash, hash)`` of a record stored in the form above whose body hashes to the hash it
    carries, read from the bytes without parsing them; ``None`` is not a verdict: the record is then parsed
    and checked the slow way, which names the problem.

    ``prev_hash`` and ``seq`` are read where canonical text puts the top-level members (the first
    ``"prev_hash"`` key: only flat search fields sort before it; the last ``"seq"`` key: only flat search
    fields sort after it), whatever search fields a record has. Both are read from the hashed bytes, so
    what is checked is pinned by this record's hash, the next record's link and, through the links, the
    next signed checkpoint: bytes that read differently here than in a JSON parser cannot be put in the
    place of a record without breaking those."""
    if raw[:8] != _STORED_PREFIX or raw[20:30] != b'","hash":"' or raw[94:96] != b'",':
        return None
    hashed = _OPEN.copy()
    hashed.update(memoryview(raw)[_BODY_AT:])
    digest = hashed.hexdigest()
    if raw[30:94] != digest.encode():
        return None
    at = raw.find(b'"prev_hash":"', _BODY_AT)
    tail = raw.rfind(b',"seq":')
    if at < 0 or raw[at + 77 : at + 78] != b'"' or tail < 0 or raw[-1:] != b"}":
        return None
    end = raw.find(b",", tail + 7)
    seq = raw[tail + 7 : end if end > 0 else -1]
    if not seq.isdigit() or len(seq) > 12 or raw[8:20] != b"%012d" % int(seq):
        return None
    return int(seq), raw[at + 13 : at + 77].decode(), digest


def _fast_reads(rows: list[bytes]) -> list[tuple[int, str, str] | None]:
    return [_fast_read(row) for row in rows]


def hash_of(doc: Document) -> str:
    fields = {k: v for k, v in doc.items() if k not in ("_id", "seq", "prev_hash", "hash", "resource")}
    return record_hash(doc.get("seq"), doc.get("prev_hash"), doc.get("resource"), **fields)  # type: ignore[arg-type]  # fields holds none of the three named ones


def holds_its_hash(doc: Document, digest: str) -> bool:
    """Whether ``doc`` (all but its key and hash) hashes to ``digest``: under the canonical text, or, for a
    record holding a float, under orjson's (the chain writes with it). Either is a fixed function of the
    record's content, so a record changed to match still needs a SHA-256 preimage."""
    if hash_of(doc) == digest:
        return True
    body = {k: v for k, v in doc.items() if k not in ("_id", "hash")}
    return hashlib.sha256(orjson_canonical(body)).hexdigest() == digest


def _checkpoint_payload(cp: Document) -> bytes:
    return canonical({k: cp.get(k) for k in ("seq", "head_hash", "hashes", "key_id", "signed_at")})


class SignatureChecker(Protocol):
    """What checking a checkpoint needs of the key: its id and a verification (no private key)."""

    key_id: str

    def verify(self, data: bytes, signature: str) -> bool: ...


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


class PublicKey:
    """The checkpoint key's public half (raw Ed25519 bytes): what a range worker checks signatures with."""

    def __init__(self, raw: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self.public_key = raw
        self.key_id = key_id_of(raw)

    def verify(self, data: bytes, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(base64.urlsafe_b64decode(signature.encode()), data)
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class Verification:
    intact: bool
    count: int
    first_broken: int | None = None
    problem: str | None = None
    since: int | None = None
    checkpoints: int = 0
    # Records after the last checkpoint: linked, but not yet covered by a signature.
    unsigned: int = 0
    # How it was done, not what it found (left out of equality): ranges checked by worker processes
    # (0: in this process) and the CPU seconds those processes spent on them.
    ranges: int = field(default=0, compare=False)
    worker_cpu_seconds: float = field(default=0.0, compare=False)


class _Checker:
    """The checkpoint side of a verification: signatures, signed hashes, and the running tally."""

    def __init__(self, signer: SignatureChecker | None, every: int, since: int | None) -> None:
        self.signer = signer
        self.every = every
        self.since = since
        self.count = 0
        self.checkpoints = 0
        self.last_checkpoint = since or 0
        self.recent: deque[tuple[int, str]] = deque(maxlen=every)

    def broken(self, seq: int, problem: str) -> Verification:
        return Verification(False, self.count, seq, problem, self.since, self.checkpoints)

    def check_signature(self, cp: Document) -> str | None:
        if self.signer is None:
            return None
        if cp.get("key_id") != self.signer.key_id or not self.signer.verify(
            _checkpoint_payload(cp), cp.get("signature", "")
        ):
            return f"the signature of checkpoint {cp.get('seq')} is not valid"
        return None

    def at(self, seq: int, digest: str, cp: Document | None) -> Verification | None:
        """The record at a checkpoint's position (already counted): its checkpoint, signed, names it."""
        if cp is None:
            return self.broken(seq, f"checkpoint {seq} is missing")
        if (problem := self.check_signature(cp)) is not None:
            return self.broken(seq, problem)
        if cp.get("head_hash") != digest:
            # The links are consistent but the signed hashes are not: the chain was rewritten. The signed
            # list names the first record that differs.
            signed = cp.get("hashes") or []
            for (at, actual), expected in zip(self.recent, signed[-len(self.recent) :], strict=False):
                if actual != expected:
                    return self.broken(
                        at, f"record {at} differs from signed checkpoint {seq} (the chain was rewritten)"
                    )
            return self.broken(seq, f"record {seq} differs from signed checkpoint {seq} (the chain was rewritten)")
        self.checkpoints += 1
        self.last_checkpoint = seq
        return None

    def result(self, last: int) -> Verification:
        return Verification(
            True, self.count, None, None, self.since, self.checkpoints, unsigned=max(0, last - self.last_checkpoint)
        )


Reading = tuple[int, str, str]


class Walk:
    """Records in chain order, a page at a time: each must be at the next position, link to the one before,
    hash to its own hash, and, at a checkpoint's position, match its signed checkpoint.

    A walk over the whole chain starts from a known link and position. A walk over one range of it starts
    from neither (``prev`` and ``expected`` ``None``): its first record's position and link are taken as
    given and kept in ``first``, for the join to hold against the range before (see ``services.audit.ranges``)."""

    def __init__(self, checker: _Checker, prev: str | None, expected: int | None) -> None:
        self.checker = checker
        self.prev = prev
        self.expected = expected
        self.first: tuple[int, str] | None = None
        self.last: tuple[int, str] | None = None

    def page(
        self, rows: Sequence[bytes | Document], reads: Sequence[Reading | None], cps: dict[int, Document]
    ) -> Verification | None:
        """Check one page; the first problem, or ``None`` if every record of it holds."""
        checker = self.checker
        every, signed, recent = checker.every, checker.signer is not None, checker.recent
        for row, fast in zip(rows, reads, strict=True):
            if fast is None:
                doc: Document = json.loads(row) if isinstance(row, bytes) else row
                # A field that is missing reads as a value no record has (seq 0, an empty hash).
                seq, link, digest = doc.get("seq", 0), doc.get("prev_hash", ""), doc.get("hash", "")
            else:
                seq, link, digest = fast
            if self.expected is None or self.prev is None:
                self.first = (seq, link)
                self.expected, self.prev = seq, link
            if seq != self.expected:
                return checker.broken(self.expected, f"record {self.expected} is missing")
            if link != self.prev:
                return checker.broken(seq, f"record {seq} does not follow record {seq - 1}")
            if fast is None and not holds_its_hash(doc, digest):
                return checker.broken(seq, f"record {seq} was altered")
            checker.count += 1
            recent.append((seq, digest))
            if signed and seq % every == 0 and (found := checker.at(seq, digest, cps.get(seq))) is not None:
                return found
            self.prev, self.expected = digest, seq + 1
            self.last = (seq, digest)
        return None
