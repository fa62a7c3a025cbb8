"""The audit log as a hash chain: each record holds its sequence number, the previous record's hash
and its own hash (SHA-256 over a canonical serialisation). Records are only ever appended.

Ordering with several writers: ``seq`` has a unique index, so two appenders racing for the same
position cannot both win; the loser re-reads the head and tries the next position. In one process an
asyncio lock keeps appends in turn so that retry is rare.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.store import ASCENDING, DESCENDING, Document, DocumentStore, DuplicateKey, Index, Session

GENESIS = "0" * 64
VERIFY_PAGE = 1000


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(seq: int, prev_hash: str, resource: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({"seq": seq, "prev": prev_hash, "resource": resource})).hexdigest()


@dataclass(frozen=True)
class Verification:
    intact: bool
    count: int
    first_broken: int | None = None
    problem: str | None = None


class AuditChain:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._records = store.collection(
            "audit_records",
            [Index(("seq",), unique=True), Index(("event_id",), unique=True),
             Index(("entities",)), Index(("orgs",)), Index(("patient",))],
        )
        self._lock = asyncio.Lock()

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
        """Append one record (``None`` if this event id is already recorded)."""
        async with self._lock:
            while True:
                try:
                    async with self._store.transaction() as session:
                        if await self._records.find_one({"event_id": event_id}, session=session):
                            return None
                        head = await self.head(session)
                        seq = (head["seq"] + 1) if head else 1
                        prev = head["hash"] if head else GENESIS
                        resource = {**resource, "id": str(seq)}
                        doc = {
                            "_id": f"{seq:012d}",
                            "seq": seq,
                            "event_id": event_id,
                            "prev_hash": prev,
                            "hash": record_hash(seq, prev, resource),
                            "resource": resource,
                            **index,
                        }
                        await self._records.insert(doc, session=session)
                        if also is not None:
                            await also(session)
                        return doc
                except DuplicateKey:
                    # Another writer took this position (or recorded this event): look again.
                    continue

    async def search(self, where: dict[str, Any], *, limit: int, skip: int) -> list[Document]:
        return await self._records.find(where, sort=[("seq", ASCENDING)], limit=limit, skip=skip)

    async def verify(self) -> Verification:
        prev, expected_seq, count = GENESIS, 1, 0
        while True:
            page = await self._records.find({"seq": {"$gte": expected_seq}}, sort=[("seq", ASCENDING)], limit=VERIFY_PAGE)
            if not page:
                return Verification(True, count)
            for doc in page:
                seq = doc.get("seq")
                if seq != expected_seq:
                    return Verification(False, count, expected_seq, f"record {expected_seq} is missing")
                if doc.get("prev_hash") != prev:
                    return Verification(False, count, seq, f"record {seq} does not follow record {seq - 1}")
                if record_hash(seq, prev, doc.get("resource", {})) != doc.get("hash"):
                    return Verification(False, count, seq, f"record {seq} was altered")
                prev, expected_seq, count = doc["hash"], expected_seq + 1, count + 1
