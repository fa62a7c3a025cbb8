"""``$verify`` reads the records this version writes from their stored bytes, without parsing them. These
tests tamper with the service's own records (every search field included) the way someone with database
access and the chain's code, but not its signing key, would: each changed record is written back in the
stored form with its hash recomputed, so the fast path reads it, and the verification must still name the
first record that is not what was written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import services.audit.chain as chain_module
from lhcie.bench.audit import _trip_records
from services.audit.chain import AuditChain, Verification, _canonical_text, _fast_read, _stored
from services.audit.signing import CheckpointSigner
from shared.store.sqlite import SqliteStore

RECORDS = 12
EVERY = 5
TABLE = "c_audit_records"


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()


async def write_chain(db: Path, signer: CheckpointSigner, *, records: int, every: int) -> None:
    """A chain of ``records`` of the service's own records (a document's trip, over and over) in ``db``."""
    store = SqliteStore(db)
    chain = AuditChain(store, signer=signer, checkpoint_every=every)
    await store.start()
    trip = _trip_records()
    for i in range(records):
        resource, index = trip[i % len(trip)]
        await chain.append(f"event-{i + 1}", resource, index)
    await store.close()


@pytest.fixture
async def written(tmp_path: Path, signer: CheckpointSigner) -> AsyncIterator[Path]:
    db = tmp_path / "audit.sqlite3"
    await write_chain(db, signer, records=RECORDS, every=EVERY)
    yield db


async def verify(db: Path, signer: CheckpointSigner) -> Verification:
    store = SqliteStore(db)
    chain = AuditChain(store, signer=signer, checkpoint_every=EVERY)
    await store.start()
    try:
        return await chain.verify()
    finally:
        await store.close()


def records(db: Path) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        docs = [json.loads(doc) for (doc,) in conn.execute(f"SELECT doc FROM {TABLE}")]
    return {d["seq"]: d for d in docs}


def put(db: Path, docs: list[dict[str, Any]], *, rehash: bool = True) -> None:
    """Write records back in the stored form (key, hash, canonical text), with their hash recomputed."""
    with sqlite3.connect(db) as conn:
        for doc in docs:
            body = _canonical_text({k: v for k, v in doc.items() if k not in ("_id", "hash")})
            if rehash:
                doc["hash"] = hashlib.sha256(body.encode()).hexdigest()
            conn.execute(
                f"INSERT OR REPLACE INTO {TABLE} (id, doc) VALUES (?, ?)",
                (f"{doc['seq']:012d}", _stored(f"{doc['seq']:012d}", doc["hash"], body)),
            )


def relink(docs: list[dict[str, Any]], prev: str) -> None:
    """Renumber nothing, but link and hash every record to the one before: a consistent rewrite."""
    for doc in docs:
        doc["prev_hash"] = prev
        body = _canonical_text({k: v for k, v in doc.items() if k not in ("_id", "hash")})
        doc["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()


async def test_the_services_own_records_are_verified_from_their_bytes(
    written: Path, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite3.connect(written) as conn:
        raw = [bytes(doc) for (doc,) in conn.execute(f"SELECT CAST(doc AS BLOB) FROM {TABLE} ORDER BY id")]
    parsed = [json.loads(r) for r in raw]
    assert [_fast_read(r) for r in raw] == [(d["seq"], d["prev_hash"], d["hash"]) for d in parsed]

    # Not one record is parsed and re-serialised: the slow path is not taken.
    def parsed_anyway(doc: dict[str, Any]) -> str:
        raise AssertionError(f"record {doc.get('seq')} was verified the slow way")

    monkeypatch.setattr(chain_module, "hash_of", parsed_anyway)
    assert await verify(written, signer) == Verification(True, RECORDS, checkpoints=2, unsigned=2)


async def test_a_search_field_changed_in_place_is_found(written: Path, signer: CheckpointSigner) -> None:
    # Same length, same stored form, hash not recomputed: the bytes no longer hash to the stored hash.
    with sqlite3.connect(written) as conn:
        conn.execute(
            f'UPDATE {TABLE} SET doc = replace(doc, \'"orgs":["RJ1"]\', \'"orgs":["RJ2"]\') WHERE id = ?',
            (f"{7:012d}",),
        )
    assert await verify(written, signer) == Verification(False, 6, 7, "record 7 was altered", checkpoints=1)


async def test_a_changed_record_with_its_hash_recomputed_breaks_the_next_link(
    written: Path, signer: CheckpointSigner
) -> None:
    doc = records(written)[7]
    doc["patient"] = "9434765919"
    put(written, [doc])
    assert await verify(written, signer) == Verification(
        False, 7, 8, "record 8 does not follow record 7", checkpoints=1
    )


async def test_a_consistent_rewrite_is_caught_by_the_next_signature(written: Path, signer: CheckpointSigner) -> None:
    docs = records(written)
    docs[7]["resource"]["outcome"] = "4"
    rewritten = [docs[s] for s in range(7, RECORDS + 1)]
    relink(rewritten, docs[6]["hash"])
    put(written, rewritten, rehash=False)
    assert await verify(written, signer) == Verification(
        False, 10, 7, "record 7 differs from signed checkpoint 10 (the chain was rewritten)", checkpoints=1
    )


async def test_a_removed_record_renumbered_over_is_caught(written: Path, signer: CheckpointSigner) -> None:
    # Record 4 goes; 5..12 become 4..11, each relinked and rehashed, and the last row is dropped.
    docs = records(written)
    later = [docs[s] for s in range(5, RECORDS + 1)]
    for doc in later:
        doc["seq"] -= 1
        doc["resource"]["id"] = str(doc["seq"])
    relink(later, docs[3]["hash"])
    put(written, later, rehash=False)
    with sqlite3.connect(written) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (f"{RECORDS:012d}",))
    assert await verify(written, signer) == Verification(
        False, 5, 4, "record 4 differs from signed checkpoint 5 (the chain was rewritten)"
    )


async def test_two_records_reordered_consistently_are_caught(written: Path, signer: CheckpointSigner) -> None:
    docs = records(written)
    third, fourth = docs[3], docs[4]
    for field in ("resource", "event_id", "event_type", "subtypes", "types"):
        third[field], fourth[field] = fourth[field], third[field]
    third["resource"]["id"], fourth["resource"]["id"] = "3", "4"
    rewritten = [docs[s] for s in range(3, RECORDS + 1)]
    relink(rewritten, docs[2]["hash"])
    put(written, rewritten, rehash=False)
    assert await verify(written, signer) == Verification(
        False, 5, 3, "record 3 differs from signed checkpoint 5 (the chain was rewritten)"
    )


async def test_a_deleted_row_is_found(written: Path, signer: CheckpointSigner) -> None:
    with sqlite3.connect(written) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (f"{8:012d}",))
    assert await verify(written, signer) == Verification(False, 7, 8, "record 8 is missing", checkpoints=1)
