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
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from services.audit import ranges
from services.audit.signing import CheckpointSigner

# The checking lives in a module a range worker imports alone; its names are still read from here too.
from services.audit.verifying import (  # noqa: F401
    GENESIS,
    VERIFY_PAGE,
    Verification,
    Walk,
    _canonical_text,
    _Checker,
    _checkpoint_payload,
    _fast_read,
    _fast_reads,
    _stored,
    canonical,
    hash_of,
    record_hash,
)
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

# Stored beside the search fields; everything else in a record is a search field the hash covers too.
CHAIN_FIELDS = ("_id", "seq", "event_id", "prev_hash", "hash", "resource")


log = logging.getLogger(__name__)


class _NotJson(Exception):
    pass


def _json_only(value: Any) -> Any:
    raise _NotJson


_PLAIN_ONLY = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _body(record: dict[str, Any]) -> tuple[str, Document]:
    """The canonical text a new record's hash is over, and the record as a read will return it.

    A record of JSON values (what the audit service writes) is serialised once and is its own reading;
    one holding anything else (a datetime, say) goes through JSON first, as every record did before, so
    that the text is the canonical text of what a read returns."""
    try:
        # The canonical text as orjson writes it (verifying.orjson_canonical, a tenth of the time), refusing
        # what a read would not return as it is: a datetime, a dataclass, a subclass of str or int (an enum)
        # go to ``_json_only`` and the path below.
        text = orjson.dumps(record, default=_json_only, option=orjson.OPT_SORT_KEYS | _PLAIN_ONLY).decode()
        return text, record
    except (_NotJson, TypeError):
        read: Document = json.loads(json.dumps(record, default=str))
        return _canonical_text(read), read


class FileTable(Protocol):
    """A collection kept in a SQLite file: where, and the query its store would run for a page."""

    @property
    def path(self) -> Path: ...

    def select_sql(self, where: dict[str, Any], *, sort: Sequence[tuple[str, int]], serialized: bool) -> str: ...


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

    def file_source(self) -> FileTable | None:
        """The SQLite file and queries a process of its own can read these records with; ``None`` where the
        store keeps no such file (MongoDB)."""
        c = self._c
        return c if callable(getattr(c, "select_sql", None)) and isinstance(getattr(c, "path", None), Path) else None  # type: ignore[return-value]  # checked just now

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
        verify_workers: int | None = None,
        verify_ranges_from: int = ranges.RANGES_FROM,
    ) -> None:
        """``verify_workers`` processes (default: one per core this process may use, at most
        ``ranges.MAX_WORKERS``) verify a chain of at least ``verify_ranges_from`` records in ranges; a
        shorter chain, or one core, is verified here."""
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
        self._workers = (
            verify_workers if verify_workers is not None else min(len(os.sched_getaffinity(0)), ranges.MAX_WORKERS)
        )
        self._ranges_from = verify_ranges_from
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
        verification: Verification | None
        # A long chain in a file: ranges walked by worker processes on every core and joined at their ends,
        # with the same result as the walk below (services/audit/ranges.py says why it is exact).
        if (planned := await self._ranges_for(expected)) is not None:
            source, planned_ranges, public_key = planned
            try:
                results = await ranges.check(
                    source, planned_ranges, every=self.checkpoint_every, public_key=public_key, workers=self._workers
                )
            except ranges.RangesFailed as exc:
                log.warning("audit verify: range workers failed (%s); verifying in this process", exc)
            else:
                verification, prev, expected = ranges.join(results, checker, prev, expected)
                cpu = round(sum(r.cpu for r in results), 3)
                if verification is not None:
                    return replace(verification, ranges=len(planned_ranges), worker_cpu_seconds=cpu)
                return replace(await self._end(checker, expected), ranges=len(planned_ranges), worker_cpu_seconds=cpu)
        walk = Walk(checker, prev, expected)
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
                if (verification := walk.page(rows, reads, cps)) is not None:
                    return verification
                expected += len(rows)
        finally:
            if not ahead.cancel() and not ahead.cancelled():
                ahead.exception()  # retrieved, so an outage met while reading ahead is not logged as lost
        return await self._end(checker, expected)

    async def _end(self, checker: _Checker, expected: int) -> Verification:
        """Every record up to ``expected`` held: unless a checkpoint covers a later one that is not there."""
        last = expected - 1
        later = await self._checkpoints.find({"seq": {"$gt": last}}, sort=[("seq", ASCENDING)], limit=1)
        if later:
            return checker.broken(last + 1, f"record {last + 1} is missing (checkpoint {later[0]['seq']} covers it)")
        return checker.result(last)

    async def _ranges_for(self, first: int) -> tuple[ranges.Source, list[tuple[int, int | None]], bytes | None] | None:
        """How to verify from ``first`` on in worker processes, or ``None``: in this process (a short chain,
        one core, a store with no file a worker can open, or ranges that would split a checkpoint's
        records)."""
        if self._workers < 2 or (first - 1) % self.checkpoint_every:
            return None
        source = self._records.file_source()
        checkpoints = self._checkpoints.file_source()
        signer = self.signer
        public_key = getattr(signer, "public_key", None) if signer is not None else None
        if source is None or checkpoints is None or (signer is not None and public_key is None):
            return None
        head = await self.head()
        if head is None or head["seq"] - first + 1 < self._ranges_from:
            return None
        records_sql = source.select_sql({"seq": {"$gte": 0, "$lte": 0}}, sort=[("seq", ASCENDING)], serialized=True)
        checkpoints_sql = checkpoints.select_sql({"seq": {"$gte": 0, "$lt": 0}}, sort=(), serialized=False)
        planned = ranges.plan(first, head["seq"], self.checkpoint_every, self._workers * ranges.RANGES_PER_WORKER)
        return ranges.Source(source.path, records_sql, checkpoints_sql), planned, public_key

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
