"""The audit log as a hash chain: each record holds its sequence number, the previous record's hash
and its own hash (SHA-256 over a canonical serialisation of everything stored but the hash itself, so
the search fields are protected as well as the AuditEvent). Every ``checkpoint_every`` records a
checkpoint signs the head hash and the hashes of the records since the previous checkpoint: rewriting
the chain consistently then still breaks a signature, and the signed hashes name the first record that
changed. Records are only ever appended: the chain holds its collection through an append-only view.

Ordering with several writers: ``seq`` has a unique index, so two appenders racing for the same
position cannot both win; the loser re-reads the head and tries the next position. In one process a
single writer keeps appends in turn so that retry is rare, and appends that wait while it writes are
written together by its next transaction (group commit: one transaction and one fsync for all of them,
each record still hashed and linked to the one before). The chain's order is therefore the order in
which records became durable, one chain for the whole exchange.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.audit.signing import CheckpointSigner
from shared.store import (
    ASCENDING,
    DESCENDING,
    Collection,
    Document,
    DocumentStore,
    DuplicateKey,
    Index,
    Session,
    StoreUnavailable,
    WriteConflict,
)

GENESIS = "0" * 64
VERIFY_PAGE = 1000
# Stored beside the search fields; everything else in a record is a search field the hash covers too.
CHAIN_FIELDS = ("_id", "seq", "event_id", "prev_hash", "hash", "resource")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(seq: int, prev_hash: str, resource: dict[str, Any], **fields: Any) -> str:
    """SHA-256 over the record's position, its link, its AuditEvent and its other stored fields."""
    return hashlib.sha256(canonical({**fields, "seq": seq, "prev_hash": prev_hash, "resource": resource})).hexdigest()


def _canonical_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _NotJson(Exception):
    pass


def _json_only(value: Any) -> Any:
    raise _NotJson


def _body(record: dict[str, Any]) -> tuple[str, Document]:
    """The canonical text a new record's hash is over, and the record as a read will return it.

    A record of JSON values (what the audit service writes) is serialised once and is its own reading;
    one holding anything else (a datetime, say) goes through JSON first, as every record did before, so
    that the text is the canonical text of what a read returns."""
    try:
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_only)
        return text, record
    except (_NotJson, TypeError):
        read: Document = json.loads(json.dumps(record, default=str))
        return _canonical_text(read), read


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


def hash_of(doc: Document) -> str:
    fields = {k: v for k, v in doc.items() if k not in ("_id", "seq", "prev_hash", "hash", "resource")}
    return record_hash(doc.get("seq"), doc.get("prev_hash"), doc.get("resource"), **fields)  # type: ignore[arg-type]  # fields holds none of the three named ones


def _checkpoint_payload(cp: Document) -> bytes:
    return canonical({k: cp.get(k) for k in ("seq", "head_hash", "hashes", "key_id", "signed_at")})


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


class AppendOnly:
    """The only operations the audit module has on its records: add one, and read."""

    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def insert(self, doc: Document, *, session: Session | None = None) -> None:
        await self._c.insert(doc, session=session)

    async def insert_many(
        self, docs: Sequence[Document], texts: Sequence[str], *, session: Session | None = None
    ) -> None:
        """Insert records, as their stored ``texts`` where the store takes serialised documents."""
        insert_serialized = getattr(self._c, "insert_serialized", None)
        if insert_serialized is None:
            await self._c.insert_many(docs, session=session)
        else:
            await insert_serialized([(d["_id"], t) for d, t in zip(docs, texts, strict=True)], session=session)

    async def find_serialized(
        self, where: dict[str, Any], *, sort: Sequence[tuple[str, int]], limit: int, fields: Sequence[str]
    ) -> list[tuple[Any, ...]] | None:
        """Stored documents (UTF-8 bytes) with some fields, where the store can give them unparsed; else
        ``None``."""
        find = getattr(self._c, "find_serialized", None)
        return None if find is None else await find(where, sort=sort, limit=limit, fields=fields)

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._c.get(key, session=session)

    async def find(self, where: dict[str, Any] | None = None, **kw: Any) -> list[Document]:
        return await self._c.find(where, **kw)

    async def find_one(self, where: dict[str, Any], **kw: Any) -> Document | None:
        return await self._c.find_one(where, **kw)

    async def count(self, where: dict[str, Any] | None = None) -> int:
        return await self._c.count(where)


SignerSource = CheckpointSigner | Callable[[], CheckpointSigner] | None


# Records written in one transaction at most: bounds a transaction's time under the write lock.
MAX_BATCH = 500


@dataclass
class _Pending:
    event_id: str
    resource: dict[str, Any]
    index: dict[str, Any]
    also: Callable[[Session], Awaitable[None]] | None
    done: asyncio.Future[Document | None]


class AuditChain:
    def __init__(
        self,
        store: DocumentStore,
        *,
        signer: SignerSource = None,
        checkpoint_every: int = 100,
        extra_indexes: Sequence[Index] = (),
    ) -> None:
        if not 1 <= checkpoint_every <= VERIFY_PAGE:
            raise ValueError(f"checkpoint_every must be 1..{VERIFY_PAGE}")
        self._store = store
        self._records = AppendOnly(
            store.collection(
                "audit_records",
                [
                    Index(("seq",), unique=True),
                    Index(("event_id",), unique=True),
                    Index(("entities",)),
                    Index(("orgs",)),
                    Index(("patient",)),
                    *extra_indexes,
                ],
            )
        )
        self._checkpoints = AppendOnly(store.collection("audit_checkpoints", [Index(("seq",), unique=True)]))
        self._signer_source = signer
        self._signer: CheckpointSigner | None = None
        self.checkpoint_every = checkpoint_every
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        # The hashes of the newest records this chain wrote, for the next checkpoint to sign without reading
        # them back; trusted only while the head read in a transaction is their last.
        self._recent: deque[tuple[int, str]] = deque(maxlen=checkpoint_every)

    @property
    def signer(self) -> CheckpointSigner | None:
        # Loaded on first use: building the chain does no I/O.
        if self._signer is None and self._signer_source is not None:
            source = self._signer_source
            self._signer = source if isinstance(source, CheckpointSigner) else source()
        return self._signer

    async def head(self, session: Session | None = None) -> Document | None:
        return await self._records.find_one({}, sort=[("seq", DESCENDING)], session=session)

    async def append(
        self,
        event_id: str,
        resource: dict[str, Any],
        index: dict[str, Any],
        *,
        also: Callable[[Session], Awaitable[None]] | None = None,
    ) -> Document | None:
        """Append one record (``None`` if this event id is already recorded), durable when this returns.

        Group commit: one writer per chain takes every append waiting when its last transaction ends and
        writes them in the next (one transaction, one fsync, one head read, up to ``MAX_BATCH``), so
        concurrent consumers share the cost of durability. Each record is still hashed and linked on its
        own. A caller that stops waiting does not stop its record: it is written, or fails, with the rest."""
        loop = asyncio.get_running_loop()
        pending = _Pending(event_id, resource, index, also, loop.create_future())
        self._pending.append(pending)
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_pending())
        try:
            return await asyncio.shield(pending.done)
        except asyncio.CancelledError:
            # The record is still written, or fails with the rest, and nobody will ask which.
            pending.done.add_done_callback(_outcome_unread)
            raise

    async def _write_pending(self) -> None:
        # Appends that arrive while a transaction is written wait for the next one; waiting on the record
        # itself, not on a lock, lets every finished caller go at once and come back as one batch (behind
        # a lock they left one at a time and the next batch held only those that had, ~10 records).
        while self._pending:
            await self._write_batch()
            # The callers just released come back with their next records within a few turns of the loop
            # (their wake-up is two hops): wait those turns rather than leave them a writer of their own.
            for _ in range(3):
                if self._pending:
                    break
                await asyncio.sleep(0)

    async def _write_batch(self) -> None:
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        try:
            await self._commit(batch)
        except BaseException as exc:
            # Cancelled with the loop, or a bug: the transaction rolled back, so no caller may be told its
            # record is durable, and none may wait for ever.
            failure = exc if isinstance(exc, Exception) else StoreUnavailable("the audit writer stopped")
            for one in (*batch, *self._pending):
                if not one.done.done():
                    one.done.set_exception(failure)
            self._pending.clear()
            raise

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            written = await self._write(batch)
        except StoreUnavailable as exc:
            # The store, not a record: every record in the batch fails alike (the bus retries them).
            for one in batch:
                one.done.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
                return
            # One record's side effect (or data) failed: write each alone, so only that one fails.
            for one in batch:
                await self._commit([one])
            return
        for one, doc in zip(batch, written, strict=True):
            one.done.set_result(doc)

    async def _write(self, batch: list[_Pending]) -> list[Document | None]:
        signer = self.signer
        every = self.checkpoint_every
        while True:
            try:
                async with self._store.transaction() as session:
                    ids = list(dict.fromkeys(p.event_id for p in batch))
                    known = {
                        d["event_id"]
                        for d in await self._records.find({"event_id": {"$in": ids}}, limit=len(ids), session=session)
                    }
                    head = await self.head(session)
                    seq = head["seq"] if head else 0
                    prev = head["hash"] if head else GENESIS
                    # What this chain last wrote is still the head: no other writer came between.
                    recent = list(self._recent) if self._recent and self._recent[-1] == (seq, prev) else []
                    out: list[Document | None] = []
                    docs: list[Document] = []
                    texts: list[str] = []
                    for p in batch:
                        if p.event_id in known:
                            out.append(None)
                            continue
                        known.add(p.event_id)
                        seq += 1
                        body, doc = _body(
                            {
                                **p.index,
                                "seq": seq,
                                "event_id": p.event_id,
                                "prev_hash": prev,
                                "resource": {**p.resource, "id": str(seq)},
                            }
                        )
                        doc["_id"] = f"{seq:012d}"
                        doc["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()
                        docs.append(doc)
                        texts.append(_stored(doc["_id"], prev, body))
                        recent.append((seq, prev))
                        out.append(doc)
                    await self._records.insert_many(docs, texts, session=session)
                    if signer is not None:
                        for doc in docs:
                            if doc["seq"] % every == 0:
                                await self._checkpoint(signer, doc, recent, session)
                    for p in batch:
                        if p.also is not None:
                            await p.also(session)
                # Committed: only now are these the newest records.
                self._recent.extend(recent[-every:])
                return out
            except (DuplicateKey, WriteConflict):
                # Another writer took these positions (or recorded one of these events): look again.
                continue

    async def _checkpoint(
        self, signer: CheckpointSigner, head: Document, recent: list[tuple[int, str]], session: Session
    ) -> None:
        seq, every = head["seq"], self.checkpoint_every
        hashes = [h for s, h in recent if seq - every < s <= seq]
        if len(hashes) != min(every, seq):
            # Not all written by this chain since its last look (a restart, another replica): read them.
            covered = await self._records.find(
                {"seq": {"$gt": seq - every, "$lte": seq}}, sort=[("seq", ASCENDING)], limit=every, session=session
            )
            hashes = [d["hash"] for d in covered]
        cp: Document = {
            "_id": f"{seq:012d}",
            "seq": seq,
            "head_hash": head["hash"],
            "hashes": hashes,
            "key_id": signer.key_id,
            "signed_at": datetime.now(UTC).isoformat(),
        }
        cp["signature"] = signer.sign(_checkpoint_payload(cp))
        await self._checkpoints.insert(cp, session=session)

    async def checkpoints(self, *, limit: int = 100, skip: int = 0) -> list[Document]:
        return await self._checkpoints.find({}, sort=[("seq", DESCENDING)], limit=limit, skip=skip)

    async def search(self, where: dict[str, Any], *, limit: int, skip: int) -> list[Document]:
        return await self._records.find(where, sort=[("seq", ASCENDING)], limit=limit, skip=skip)

    async def scan(self, where: dict[str, Any] | None = None, *, page: int = VERIFY_PAGE) -> AsyncIterator[Document]:
        """Every matching record in chain order, a page at a time (keyset paging on ``seq``)."""
        after = 0
        while True:
            docs = await self._records.find(
                {**(where or {}), "seq": {"$gt": after}}, sort=[("seq", ASCENDING)], limit=page
            )
            for doc in docs:
                yield doc
            if len(docs) < page:
                return
            after = docs[-1]["seq"]

    async def verify(self, *, since: int | None = None) -> Verification:
        """Check the whole chain, or from a checkpoint on; name the first record that fails."""
        checker = _Checker(self.signer, self.checkpoint_every, since)
        prev, expected = GENESIS, 1
        if since is not None:
            cp = await self._checkpoints.get(f"{since:012d}")
            if cp is None:
                return checker.broken(since, f"there is no checkpoint at record {since}")
            if (problem := checker.check_signature(cp)) is not None:
                return checker.broken(since, problem)
            prev, expected = cp["head_hash"], since + 1
        every, signed, recent = self.checkpoint_every, checker.signer is not None, checker.recent
        ahead = asyncio.ensure_future(self._page(expected))
        try:
            while True:
                rows, reads, cps = await ahead
                if not rows:
                    break
                # The next page is read and hashed (by the store's reader thread and a worker thread, which
                # leave the GIL while SQLite steps and while a record is hashed) while this one is checked;
                # if this one breaks, it is not used.
                ahead = asyncio.ensure_future(self._page(expected + len(rows)))
                for row, fast in zip(rows, reads, strict=True):
                    if fast is None:
                        doc: Document = json.loads(row) if isinstance(row, bytes) else row
                        # A field that is missing reads as a value no record has (seq 0, an empty hash).
                        seq, link, digest = doc.get("seq", 0), doc.get("prev_hash", ""), doc.get("hash", "")
                    else:
                        seq, link, digest = fast
                    if seq != expected:
                        return checker.broken(expected, f"record {expected} is missing")
                    if link != prev:
                        return checker.broken(seq, f"record {seq} does not follow record {seq - 1}")
                    if fast is None and hash_of(doc) != digest:
                        return checker.broken(seq, f"record {seq} was altered")
                    checker.count += 1
                    recent.append((seq, digest))
                    if signed and seq % every == 0 and (found := checker.at(seq, digest, cps.get(seq))) is not None:
                        return found
                    prev, expected = digest, expected + 1
        finally:
            if not ahead.cancel() and not ahead.cancelled():
                ahead.exception()  # retrieved, so an outage met while reading ahead is not logged as lost
        last = expected - 1
        later = await self._checkpoints.find({"seq": {"$gt": last}}, sort=[("seq", ASCENDING)], limit=1)
        if later:
            return checker.broken(last + 1, f"record {last + 1} is missing (checkpoint {later[0]['seq']} covers it)")
        return checker.result(last)

    async def _page(
        self, first: int
    ) -> tuple[Sequence[bytes | Document], list[tuple[int, str, str] | None], dict[int, Document]]:
        """The next records to verify, from ``first`` on, each with what the fast path read from its stored
        bytes (``None``: parse it), and the checkpoints among them."""
        where, sort = {"seq": {"$gte": first}}, [("seq", ASCENDING)]
        raw = await self._records.find_serialized(where, sort=sort, limit=VERIFY_PAGE, fields=())
        rows: Sequence[bytes | Document]
        if raw is None:
            rows = await self._records.find(where, sort=sort, limit=VERIFY_PAGE)
            reads: list[tuple[int, str, str] | None] = [None] * len(rows)
        else:
            blobs: list[bytes] = [doc for (doc,) in raw]
            rows, reads = blobs, await asyncio.to_thread(_fast_reads, blobs)
        cps: dict[int, Document] = {}
        if rows and self.signer is not None:
            found = await self._checkpoints.find({"seq": {"$gte": first, "$lt": first + len(rows)}}, limit=VERIFY_PAGE)
            cps = {c["seq"]: c for c in found}
        return rows, reads, cps


def _outcome_unread(done: asyncio.Future[Document | None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a failure nobody waits for is not logged as lost


def _fast_reads(rows: list[bytes]) -> list[tuple[int, str, str] | None]:
    return [_fast_read(row) for row in rows]


class _Checker:
    """The checkpoint side of a verification: signatures, signed hashes, and the running tally."""

    def __init__(self, signer: CheckpointSigner | None, every: int, since: int | None) -> None:
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
