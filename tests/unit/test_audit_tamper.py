"""The hash chain catches tampering with the stored records and names the first broken one.

Each test writes a chain through ``AuditChain``, then changes the SQLite file behind its back with
``sqlite3`` (as someone with database access would), then verifies.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lhcie.bench.audit import bench
from services.audit.chain import AuditChain, Verification, _checkpoint_payload, hash_of
from services.audit.signing import CheckpointSigner
from services.audit.verifying import orjson_canonical
from shared.store.sqlite import SqliteStore

RECORDS = 12
EVERY = 5
TABLE = "c_audit_records"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()


async def open_chain(db: Path, signer: CheckpointSigner) -> tuple[SqliteStore, AuditChain]:
    store = SqliteStore(db)
    chain = AuditChain(store, signer=signer, checkpoint_every=EVERY)
    await store.start()
    return store, chain


@pytest.fixture
async def written(db: Path, signer: CheckpointSigner) -> AsyncIterator[Path]:
    store, chain = await open_chain(db, signer)
    for i in range(1, RECORDS + 1):
        resource = {
            "resourceType": "AuditEvent",
            "action": "R",
            "outcome": "0",
            "entity": [{"what": {"reference": f"Binary/d{i}"}}],
        }
        await chain.append(
            f"event-{i}", resource, {"entities": [f"Binary/d{i}"], "orgs": ["RJ1"], "patient": "9000000009"}
        )
    await store.close()
    yield db


async def verify(db: Path, signer: CheckpointSigner, since: int | None = None) -> Verification:
    store, chain = await open_chain(db, signer)
    try:
        return await chain.verify(since=since)
    finally:
        await store.close()


def rows(db: Path) -> dict[int, dict]:
    with sqlite3.connect(db) as conn:
        return {json.loads(doc)["seq"]: json.loads(doc) for (doc,) in conn.execute(f"SELECT doc FROM {TABLE}")}


def write(db: Path, doc: dict) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE {TABLE} SET doc = ? WHERE id = ?", (json.dumps(doc), doc["_id"]))


async def test_an_untouched_chain_verifies_with_its_signed_checkpoints(written: Path, signer: CheckpointSigner) -> None:
    assert await verify(written, signer) == Verification(True, RECORDS, None, None, None, checkpoints=2, unsigned=2)
    assert await verify(written, signer, since=5) == Verification(True, 7, None, None, 5, checkpoints=1, unsigned=2)


async def test_a_changed_record_is_found(written: Path, signer: CheckpointSigner) -> None:
    doc = rows(written)[7]
    doc["resource"]["entity"][0]["what"]["reference"] = "Binary/something-else"
    write(written, doc)
    assert await verify(written, signer) == Verification(False, 6, 7, "record 7 was altered", checkpoints=1)


async def test_a_record_with_a_float_in_orjsons_text_verifies_as_a_plain_document_and_a_changed_one_does_not(
    written: Path, signer: CheckpointSigner
) -> None:
    # The chain hashes orjson's text, which puts some floats differently from the standard library's
    # canonical text (0.00001 against 1e-05); stored as a plain document (MongoDB's form), the walk
    # recomputes the text and must accept orjson's. Record 12 is past the last checkpoint: only its own
    # hash holds it.
    doc = rows(written)[12]
    doc["hours_waited"] = 1.5e-05
    body = {k: v for k, v in doc.items() if k not in ("_id", "hash")}
    doc["hash"] = hashlib.sha256(orjson_canonical(body)).hexdigest()
    write(written, doc)
    assert await verify(written, signer) == Verification(True, RECORDS, None, None, None, checkpoints=2, unsigned=2)
    doc["hours_waited"] = 2.5e-05
    write(written, doc)
    assert await verify(written, signer) == Verification(False, 11, 12, "record 12 was altered", checkpoints=2)


async def test_a_changed_search_field_is_found_too(written: Path, signer: CheckpointSigner) -> None:
    # Hiding a record from patient searches without touching the AuditEvent is tampering as well.
    doc = rows(written)[3]
    doc["patient"] = "9434765919"
    write(written, doc)
    assert await verify(written, signer) == Verification(False, 2, 3, "record 3 was altered")


async def test_a_deleted_record_is_found(written: Path, signer: CheckpointSigner) -> None:
    with sqlite3.connect(written) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (f"{4:012d}",))
    assert await verify(written, signer) == Verification(False, 3, 4, "record 4 is missing")


async def test_deleting_the_newest_records_behind_a_checkpoint_is_found(
    written: Path, signer: CheckpointSigner
) -> None:
    with sqlite3.connect(written) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id >= ?", (f"{9:012d}",))
    assert await verify(written, signer) == Verification(
        False, 8, 9, "record 9 is missing (checkpoint 10 covers it)", checkpoints=1
    )


async def test_two_records_swapped_are_found(written: Path, signer: CheckpointSigner) -> None:
    # Swap what happened at positions 3 and 4, each keeping its own hash and link.
    docs = rows(written)
    third, fourth = docs[3], docs[4]
    for field in ("resource", "entities"):
        third[field], fourth[field] = fourth[field], third[field]
    write(written, third)
    write(written, fourth)
    assert await verify(written, signer) == Verification(False, 2, 3, "record 3 was altered")


async def test_two_records_renumbered_are_found(written: Path, signer: CheckpointSigner) -> None:
    docs = rows(written)
    third, fourth = docs[3], docs[4]
    fourth["seq"] = -1  # seq is unique: park one first
    write(written, fourth)
    third["seq"], fourth["seq"] = 4, 3
    write(written, third)
    write(written, fourth)
    assert await verify(written, signer) == Verification(False, 2, 3, "record 3 does not follow record 2")


async def test_a_chain_rewritten_consistently_after_a_checkpoint_is_caught_by_the_next_signature(
    written: Path, signer: CheckpointSigner
) -> None:
    # Change record 7 and recompute every link and hash from there: the links all hold, but checkpoint
    # 10 signed the original hashes, and its list of signed hashes names record 7.
    docs = rows(written)
    prev = docs[6]["hash"]
    for seq in range(7, RECORDS + 1):
        doc = docs[seq]
        if seq == 7:
            doc["resource"]["outcome"] = "4"
        doc["prev_hash"] = prev
        doc["hash"] = prev = hash_of(doc)
        write(written, doc)
    assert await verify(written, signer) == Verification(
        False, 10, 7, "record 7 differs from signed checkpoint 10 (the chain was rewritten)", checkpoints=1
    )
    assert (await verify(written, signer, since=5)).first_broken == 7


async def test_a_forged_checkpoint_fails_its_signature(written: Path, signer: CheckpointSigner) -> None:
    # The attacker rewrites from record 7 and re-signs checkpoint 10 with a key of their own.
    docs = rows(written)
    prev = docs[6]["hash"]
    for seq in range(7, RECORDS + 1):
        doc = docs[seq]
        doc["resource"]["action"] = "C"
        doc["prev_hash"] = prev
        doc["hash"] = prev = hash_of(doc)
        write(written, doc)
    with sqlite3.connect(written) as conn:
        (raw,) = conn.execute("SELECT doc FROM c_audit_checkpoints WHERE id = ?", (f"{10:012d}",)).fetchone()
        cp = json.loads(raw)
        cp["head_hash"] = docs[10]["hash"]
        cp["hashes"] = [docs[s]["hash"] for s in range(6, 11)]
        cp["signature"] = CheckpointSigner.generate().sign(_checkpoint_payload(cp))
        conn.execute("UPDATE c_audit_checkpoints SET doc = ? WHERE id = ?", (json.dumps(cp), cp["_id"]))
    assert await verify(written, signer) == Verification(
        False, 10, 10, "the signature of checkpoint 10 is not valid", checkpoints=1
    )


async def test_a_removed_checkpoint_is_found(written: Path, signer: CheckpointSigner) -> None:
    with sqlite3.connect(written) as conn:
        conn.execute("DELETE FROM c_audit_checkpoints WHERE id = ?", (f"{5:012d}",))
    assert await verify(written, signer) == Verification(False, 5, 5, "checkpoint 5 is missing")
    assert await verify(written, signer, since=5) == Verification(False, 0, 5, "there is no checkpoint at record 5", 5)


async def test_the_same_event_twice_is_recorded_once(db: Path, signer: CheckpointSigner) -> None:
    store, chain = await open_chain(db, signer)
    try:
        first = await chain.append("event-1", {"resourceType": "AuditEvent"}, {"orgs": ["RJ1"]})
        again = await chain.append("event-1", {"resourceType": "AuditEvent"}, {"orgs": ["RJ1"]})
        assert first is not None and first["seq"] == 1
        assert again is None
        assert (await chain.verify()).count == 1
    finally:
        await store.close()


async def test_the_benchmark_helper_appends_and_verifies(db: Path, signer: CheckpointSigner) -> None:
    store, chain = await open_chain(db, signer)
    try:
        result = await bench(chain, 11)
        assert result.records == 11
        assert result.appends_per_second > 0 and result.verified_per_second > 0
        assert await chain.verify() == Verification(True, 11, checkpoints=2, unsigned=1)
    finally:
        await store.close()
