"""Group commit in the audit chain: appends that arrive together share one transaction, and the chain is
the same chain (every record hashed and linked on its own, checkpoints signed where they always were)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.audit.chain import GENESIS, MAX_BATCH, AuditChain, Verification, _fast_read, hash_of
from services.audit.signing import CheckpointSigner
from shared.store import Session
from shared.store.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """The real SQLite store, counting the transactions it commits."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with super().transaction() as session:
            yield session
        self.transactions += 1


def resource(n: int) -> dict[str, object]:
    return {"resourceType": "AuditEvent", "outcome": "0", "n": n}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(tmp_path / "audit.sqlite3")
    yield store  # started by the test, once its collections exist
    await store.close()


async def test_concurrent_appends_share_transactions_and_the_chain_verifies_record_by_record(
    store: CountingStore,
) -> None:
    chain = AuditChain(store, signer=CheckpointSigner.generate(), checkpoint_every=10)
    await store.start()
    count = 3 * MAX_BATCH // 2
    # A redelivered event (the same id twice in flight) is recorded once.
    docs = await asyncio.gather(
        *(chain.append(f"e-{n}", resource(n), {"orgs": ["RJ1"]}) for n in range(count)),
        chain.append("e-7", resource(7), {"orgs": ["RJ1"]}),
    )

    assert sum(d is not None for d in docs) == count
    # The first append writes alone; everything that queued behind it goes in batches of at most MAX_BATCH.
    assert store.transactions <= 1 + -(-(count - 1) // MAX_BATCH) + 1
    verification = await chain.verify()
    assert (verification.intact, verification.count, verification.checkpoints) == (True, count, count // 10)
    records = await chain.search({}, limit=1000, skip=0) + await chain.search({}, limit=1000, skip=1000)
    assert [r["seq"] for r in records] == list(range(1, count + 1))
    assert [r["prev_hash"] for r in records] == [GENESIS] + [r["hash"] for r in records[:-1]]
    assert sorted(r["event_id"] for r in records) == sorted(f"e-{n}" for n in range(count))
    # A record is returned as it was stored: what the caller got is what a read gives back.
    by_id = {r["event_id"]: r for r in records}
    assert all(by_id[d["event_id"]] == d for d in docs if d is not None)

    # Altering one record in the middle of a batch is found, and named.
    assert await store.collection("audit_records").update({"seq": 123}, {"resource.outcome": "8"}) == 1
    broken = await chain.verify()
    assert (broken.intact, broken.first_broken) == (False, 123)


async def test_a_failing_side_effect_fails_only_its_own_record(store: CountingStore) -> None:
    chain = AuditChain(store)
    effects = store.collection("effects")
    await store.start()

    def effect(n: int):  # type: ignore[no-untyped-def]
        async def also(session: Session) -> None:
            if n == 3:
                raise RuntimeError("policy view refused")
            await effects.insert({"_id": str(n)}, session=session)

        return also

    results = await asyncio.gather(
        *(chain.append(f"e-{n}", resource(n), {}, also=effect(n)) for n in range(8)), return_exceptions=True
    )

    assert isinstance(results[3], RuntimeError)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 3)
    assert sorted(d["_id"] for d in await effects.find({})) == [str(n) for n in range(8) if n != 3]
    records = await chain.search({}, limit=100, skip=0)
    assert sorted(r["event_id"] for r in records) == sorted(f"e-{n}" for n in range(8) if n != 3)
    assert (await chain.verify()).intact


async def test_verify_reads_older_records_and_finds_text_edited_in_place(store: CountingStore, tmp_path: Path) -> None:
    chain = AuditChain(store)
    records = store.collection("audit_records")
    await store.start()
    # Records as the chain stored them before this version (the store's own serialisation).
    prev = GENESIS
    for seq in range(1, 4):
        doc = {
            "orgs": ["RJ1"],
            "_id": f"{seq:012d}",
            "seq": seq,
            "event_id": f"old-{seq}",
            "prev_hash": prev,
            "resource": {**resource(seq), "id": str(seq)},
        }
        doc["hash"] = prev = hash_of(doc)
        await records.insert(doc)
    await asyncio.gather(*(chain.append(f"e-{n}", resource(n), {"orgs": ["RJ1"]}) for n in range(5)))
    assert (await chain.verify()).count == 8
    # The records this version wrote are verified from their text without parsing; the older ones parsed.
    texts = [t for (t,) in await records.find_serialized({}, sort=[("seq", 1)], limit=100)]  # type: ignore[attr-defined]
    fast = [_fast_read(t) for t in texts]
    assert [f is not None for f in fast] == [False] * 3 + [True] * 5
    parsed = [json.loads(t) for t in texts[3:]]
    assert [f for f in fast if f] == [(d["seq"], d["prev_hash"], d["hash"]) for d in parsed]

    # An edit of the stored text that keeps its form (same length, same prefix) is still found.
    with sqlite3.connect(tmp_path / "audit.sqlite3") as conn:
        changed = conn.execute(
            "UPDATE c_audit_records SET doc = replace(doc, '\"n\":2', '\"n\":9') WHERE id = '000000000006'"
        ).rowcount
    assert changed == 1
    broken = await chain.verify()
    assert (broken.intact, broken.first_broken, broken.problem) == (False, 6, "record 6 was altered")


async def test_a_caller_that_stops_waiting_leaves_every_record_written(store: CountingStore) -> None:
    chain = AuditChain(store, signer=CheckpointSigner.generate(), checkpoint_every=4)
    await store.start()
    calls = [asyncio.ensure_future(chain.append(f"e-{n}", resource(n), {"orgs": ["RJ1"]})) for n in range(10)]
    await asyncio.sleep(0)  # one turn of the loop (not a wait for time): every append is queued
    calls[3].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[3], asyncio.CancelledError)
    # Its record was in the batch being written: written with the others, the chain unbroken.
    records = await chain.search({}, limit=100, skip=0)
    assert sorted(r["event_id"] for r in records) == sorted(f"e-{n}" for n in range(10))
    assert await chain.verify() == Verification(True, 10, checkpoints=2, unsigned=2)


async def test_a_record_holding_other_than_json_values_is_hashed_as_a_read_returns_it(store: CountingStore) -> None:
    chain = AuditChain(store)
    await store.start()
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    written = await chain.append("e-1", {"resourceType": "AuditEvent", "recorded": at}, {"orgs": ["RJ1"], "at": at})

    [read] = await chain.search({}, limit=10, skip=0)
    assert read == written
    assert (read["at"], read["resource"]["recorded"]) == (str(at), str(at))
    assert hash_of(read) == read["hash"]
    assert (await chain.verify()).intact
